/*
 * autoglm.h - the public C API of autoglm-gguf: run AutoGLM-Phone-9B / GLM-4.1V GGUF models
 * (the text model, and the vision projector for screenshots) from C, C++, Swift or Objective-C.
 *
 * C99, self-contained: no ggml and no C++ types cross this boundary, so the library can be shipped
 * as one static archive or framework that exposes only this header (the whisper.cpp/llama.cpp
 * pattern for Apple platforms).
 *
 * Conventions (they hold for every function unless its comment says otherwise):
 *
 *  - Status: functions return an autoglm_status: AUTOGLM_OK (0) or a negative error code. Getters
 *    that return a count return it (>= 0) or a negative autoglm_status. A failed call leaves its
 *    output arguments unchanged except where documented (e.g. the size a buffer needs).
 *  - Errors: after a call fails, autoglm_last_error() on the same thread returns a message saying
 *    what was wrong (function name first). Nothing here throws, calls exit() or abort() on bad input.
 *  - Strings: input strings are NUL-terminated UTF-8 and are only read during the call (copied when
 *    kept). Pointer arguments must not be NULL unless a comment says so; NULL is reported as
 *    AUTOGLM_ERR_INVALID_ARGUMENT naming the argument.
 *  - Caller buffers ("buf, buf_size, n_out" triples): the function stores the length of the full
 *    result in *n_out (bytes without the terminating NUL, or tokens) in every case. If the result fits
 *    (text needs *n_out + 1 bytes, tokens need *n_out slots), it is written (text NUL-terminated) and
 *    AUTOGLM_OK is returned; otherwise nothing is written and AUTOGLM_ERR_BUFFER_TOO_SMALL is returned,
 *    so a caller can size the buffer exactly: call with (NULL, 0), allocate, call again.
 *  - Ownership: every handle returned by a load, create or start function is owned by the caller and
 *    released with the matching free function (NULL is accepted and ignored). Handles may be freed in
 *    any order: a session keeps its model's memory alive, a generation its session's, until the last
 *    user is freed.
 *  - Threads: a model is immutable after loading; its read-only functions (info, tokenize, detokenize)
 *    may be called from any number of threads at once, and so may the functions that take no handle.
 *    A session together with the generations started on it is one unit: use it from one thread at a
 *    time (different sessions from different threads are fine). Evaluations on sessions of the same
 *    model are serialized internally, because those sessions share the model's backends.
 *  - Callbacks are called on the thread that made the call that triggers them; they must return
 *    normally (no exceptions, no longjmp) and must not call back into this API, except
 *    autoglm_last_error().
 */
#ifndef AUTOGLM_H
#define AUTOGLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Symbols are exported from whatever binary contains the library: a shared libautoglm, an app that
 * links the static archive, or the Python extension (which is built with hidden visibility). */
#if defined(_WIN32) && defined(AUTOGLM_SHARED)
#    ifdef AUTOGLM_BUILD
#        define AUTOGLM_API __declspec(dllexport)
#    else
#        define AUTOGLM_API __declspec(dllimport)
#    endif
#elif defined(__GNUC__) || defined(__clang__)
#    define AUTOGLM_API __attribute__((visibility("default")))
#else
#    define AUTOGLM_API
#endif

/* Version of this header; autoglm_version() tells the version of the library actually linked. */
#define AUTOGLM_VERSION_MAJOR  0
#define AUTOGLM_VERSION_MINOR  1
#define AUTOGLM_VERSION_PATCH  0
#define AUTOGLM_VERSION_STRING "0.1.0"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------------
 * Status codes, errors, version, logging
 * ---------------------------------------------------------------------------------------------- */

typedef enum autoglm_status {
    AUTOGLM_OK = 0,
    AUTOGLM_ERR_INVALID_ARGUMENT = -1, /* NULL pointer, value out of range, unknown role, bad token id */
    AUTOGLM_ERR_BUFFER_TOO_SMALL = -2, /* see "Caller buffers" above; the needed size is reported */
    AUTOGLM_ERR_FILE = -3,             /* model file missing, unreadable, not GGUF, or not a GLM-4 model */
    AUTOGLM_ERR_CONTEXT_FULL = -4,     /* prompt + generation would exceed the session's n_ctx */
    AUTOGLM_ERR_ABORTED = -5,          /* a progress or abort callback asked to stop */
    AUTOGLM_ERR_OUT_OF_MEMORY = -6,    /* weights, KV cache or compute buffers could not be allocated */
    AUTOGLM_ERR_INTERNAL = -7          /* backend failure or a bug; the message says more */
} autoglm_status;

/* A short constant name for a status ("AUTOGLM_ERR_FILE"); "unknown status" for other values.
 * Thread-safe; the string is static. */
AUTOGLM_API const char * autoglm_status_string(autoglm_status status);

/* The message of the most recent failed call on the calling thread ("" if none has failed).
 * Successful calls do not clear it. The pointer stays valid until the next failing call on this thread. */
AUTOGLM_API const char * autoglm_last_error(void);

/* The library version, e.g. "0.1.0" (compare with AUTOGLM_VERSION_STRING). Static string. */
AUTOGLM_API const char * autoglm_version(void);

/* One line describing the build: ggml version and compiled-in backends, e.g.
 * "autoglm 0.1.0; ggml 0.25.3; backends: CPU". Static string, built on first use; thread-safe. */
AUTOGLM_API const char * autoglm_system_info(void);

/* Levels as ggml uses them, so ggml's own messages keep their level. */
typedef enum autoglm_log_level {
    AUTOGLM_LOG_DEBUG = 1,
    AUTOGLM_LOG_INFO = 2,
    AUTOGLM_LOG_WARN = 3,
    AUTOGLM_LOG_ERROR = 4
} autoglm_log_level;

/* msg is UTF-8 and valid only during the call. ggml's messages end in '\n' and may arrive in several
 * parts; ours are single lines without it. */
typedef void (*autoglm_log_callback)(autoglm_log_level level, const char * msg, void * user_data);

/* Route all log output (this library's and ggml's) to `callback`, called with `user_data`, from
 * whichever thread logs. NULL restores the default: messages of level INFO and above go to stderr.
 * Global for the process; thread-safe, but messages already being delivered may still reach the old
 * callback, so keep `user_data` valid until the next autoglm_log_set returns. */
AUTOGLM_API void autoglm_log_set(autoglm_log_callback callback, void * user_data);

/* ------------------------------------------------------------------------------------------------
 * Model
 * ---------------------------------------------------------------------------------------------- */

typedef struct autoglm_model autoglm_model;
typedef int32_t autoglm_token;

/* Load progress in [0, 1]; return false to abort loading (autoglm_model_load then returns
 * AUTOGLM_ERR_ABORTED). Called on the loading thread. */
typedef bool (*autoglm_progress_callback)(float progress, void * user_data);

typedef struct autoglm_model_params {
    int32_t n_gpu_layers; /* layers (counted from the last) on the GPU; -1: all, plus the output head.
                             Ignored, with a warning, when the library has no GPU backend. Default 0. */
    int32_t n_threads;    /* CPU threads for computation; 0 (default): the number of physical cores */
    bool use_repack;      /* CPU: repacked weight layouts where faster (default true) */
    autoglm_progress_callback progress_callback; /* may be NULL (default) */
    void * progress_callback_user_data;
} autoglm_model_params;

/* Defaults as documented in the struct. */
AUTOGLM_API autoglm_model_params autoglm_model_default_params(void);

/* Load the text model of a GGUF file (e.g. AutoGLM-Phone-9B-Q4_0.gguf; not the mmproj) into *out.
 * On failure *out is left unchanged. Errors: AUTOGLM_ERR_FILE, AUTOGLM_ERR_OUT_OF_MEMORY,
 * AUTOGLM_ERR_ABORTED, AUTOGLM_ERR_INVALID_ARGUMENT. The caller frees *out with autoglm_model_free. */
AUTOGLM_API autoglm_status autoglm_model_load(const char * path, autoglm_model_params params, autoglm_model ** out);

/* Release the caller's reference; memory goes when no session uses the model any more. NULL is a no-op. */
AUTOGLM_API void autoglm_model_free(autoglm_model * model);

/* Hyperparameters (>= 0), or AUTOGLM_ERR_INVALID_ARGUMENT for a NULL model. */
AUTOGLM_API int32_t autoglm_model_n_vocab(const autoglm_model * model);
AUTOGLM_API int32_t autoglm_model_n_ctx_train(const autoglm_model * model);
AUTOGLM_API int32_t autoglm_model_n_embd(const autoglm_model * model);
AUTOGLM_API int32_t autoglm_model_n_layer(const autoglm_model * model);

/* general.name of the file ("" if absent) / its Jinja chat template ("" if absent), owned by the model
 * and valid until it is freed. NULL for a NULL model. */
AUTOGLM_API const char * autoglm_model_name(const autoglm_model * model);
AUTOGLM_API const char * autoglm_model_chat_template(const autoglm_model * model);

/* Whether `token` ends a generation (end-of-text and GLM's turn tokens). false for a NULL model. */
AUTOGLM_API bool autoglm_token_is_eog(const autoglm_model * model, autoglm_token token);

/* ------------------------------------------------------------------------------------------------
 * Tokens and chat formatting
 * ---------------------------------------------------------------------------------------------- */

/* Tokenize `text` into tokens[0 .. *n_tokens). With parse_special, special tokens written in the text
 * ("<|user|>", "[gMASK]") become their ids, as in a rendered chat prompt; without it they are plain text.
 * No tokens are added. Caller-buffer rules apply: tokens may be NULL when n_tokens_max is 0. */
AUTOGLM_API autoglm_status autoglm_tokenize(const autoglm_model * model, const char * text, bool parse_special,
                                            autoglm_token * tokens, size_t n_tokens_max, size_t * n_tokens);

/* The bytes one token stands for. A UTF-8 character may be split across tokens, so a piece need not be
 * valid UTF-8 on its own (the generation API below always returns complete characters). */
AUTOGLM_API autoglm_status autoglm_token_to_piece(const autoglm_model * model, autoglm_token token, char * buf, size_t buf_size,
                                                  size_t * n_out);

/* The concatenated bytes of tokens[0 .. n_tokens) (tokens may be NULL when n_tokens is 0). */
AUTOGLM_API autoglm_status autoglm_detokenize(const autoglm_model * model, const autoglm_token * tokens, size_t n_tokens,
                                              char * buf, size_t buf_size, size_t * n_out);

typedef struct autoglm_chat_message {
    const char * role;    /* "system", "user", "assistant" or "observation" ("tool" means observation) */
    const char * content; /* text; NULL means empty */
} autoglm_chat_message;

/* Render messages in the GLM-4.1V / AutoGLM chat format (built in; identical to the model's template
 * for text messages), ending with the assistant prompt when add_generation_prompt. The result starts
 * with "[gMASK]<sop>": tokenize it with parse_special = true. Needs no model. */
AUTOGLM_API autoglm_status autoglm_chat_format(const autoglm_chat_message * messages, size_t n_messages,
                                               bool add_generation_prompt, char * buf, size_t buf_size, size_t * n_out);

/* ------------------------------------------------------------------------------------------------
 * Session: one conversation (KV cache) over a model
 * ---------------------------------------------------------------------------------------------- */

typedef struct autoglm_session autoglm_session;

typedef enum autoglm_kv_type {
    AUTOGLM_KV_F16 = 0, /* default: half the memory, the usual choice */
    AUTOGLM_KV_F32 = 1
} autoglm_kv_type;

/* Checked between evaluation steps; return true to stop (the call then returns AUTOGLM_ERR_ABORTED). */
typedef bool (*autoglm_abort_callback)(void * user_data);

typedef struct autoglm_session_params {
    uint32_t n_ctx;           /* tokens the conversation can hold (default 8192) */
    uint32_t n_batch;         /* prompt tokens evaluated per step (default 512) */
    autoglm_kv_type kv_type;  /* default AUTOGLM_KV_F16 */
    autoglm_abort_callback abort_callback; /* may be NULL (default) */
    void * abort_callback_user_data;
} autoglm_session_params;

AUTOGLM_API autoglm_session_params autoglm_session_default_params(void);

/* Create a session; its KV cache and compute buffers are allocated here (AUTOGLM_ERR_OUT_OF_MEMORY if
 * n_ctx is too large). The caller frees *out with autoglm_session_free. */
AUTOGLM_API autoglm_status autoglm_session_create(autoglm_model * model, autoglm_session_params params, autoglm_session ** out);

/* Release the caller's reference (a live generation keeps the session's memory until it is freed). */
AUTOGLM_API void autoglm_session_free(autoglm_session * session);

/* Forget the conversation: the next prompt is evaluated from the start. A generation still running on
 * this session ends (its next call fails with AUTOGLM_ERR_INVALID_ARGUMENT). */
AUTOGLM_API autoglm_status autoglm_session_reset(autoglm_session * session);

/* Context size, and tokens currently cached (>= 0), or AUTOGLM_ERR_INVALID_ARGUMENT for NULL. */
AUTOGLM_API int32_t autoglm_session_n_ctx(const autoglm_session * session);
AUTOGLM_API int32_t autoglm_session_n_past(const autoglm_session * session);

/* ------------------------------------------------------------------------------------------------
 * Generation: a pull API. Start with the whole prompt, then call next() until done.
 * ---------------------------------------------------------------------------------------------- */

typedef struct autoglm_generation autoglm_generation;

/* penalties -> top-k -> top-p -> min-p -> temperature -> seeded draw (llama.cpp's order). */
typedef struct autoglm_sampling_params {
    float temperature;       /* 0 (default): greedy, deterministic */
    int32_t top_k;           /* 0 (default): off */
    float top_p;             /* 1 (default): off */
    float min_p;             /* 0 (default): off */
    float repeat_penalty;    /* 1 (default): off */
    float frequency_penalty; /* 0 (default): off */
    float presence_penalty;  /* 0 (default): off */
    int32_t penalty_last_n;  /* tokens the penalties look back on; -1: all, 0: off; default 64 */
    uint64_t seed;           /* the same seed gives the same tokens on every platform; default 0 */
} autoglm_sampling_params;

AUTOGLM_API autoglm_sampling_params autoglm_sampling_default_params(void);

typedef struct autoglm_generation_params {
    int32_t max_tokens;             /* default 256; < 0: until the context is full */
    const char * const * stop;      /* stop strings (copied at start; not part of the output); may be NULL */
    size_t n_stop;
    bool stop_at_eog;               /* stop at the model's end-of-generation tokens (default true) */
} autoglm_generation_params;

AUTOGLM_API autoglm_generation_params autoglm_generation_default_params(void);

/* Start generating a continuation of `prompt` (raw text: render chats with autoglm_chat_format first;
 * parse_special as in autoglm_tokenize). The prompt is the whole conversation so far: the session keeps
 * the tokens it has already evaluated and only evaluates what differs from them, so a chat that resends
 * its history each turn pays only for the new part. The prompt is evaluated here (the slow part for long
 * prompts). Starting a generation ends any earlier one on the same session. Errors include
 * AUTOGLM_ERR_CONTEXT_FULL (the prompt does not fit), AUTOGLM_ERR_ABORTED, AUTOGLM_ERR_INVALID_ARGUMENT
 * (empty prompt, an empty stop string, sampling values out of range). Free *out with
 * autoglm_generation_free. */
AUTOGLM_API autoglm_status autoglm_generation_start(autoglm_session * session, const char * prompt, bool parse_special,
                                                    autoglm_sampling_params sampling, autoglm_generation_params params,
                                                    autoglm_generation ** out);

/* The same with a tokenized prompt (tokens[0 .. n_tokens), n_tokens > 0). */
AUTOGLM_API autoglm_status autoglm_generation_start_tokens(autoglm_session * session, const autoglm_token * tokens,
                                                           size_t n_tokens, autoglm_sampling_params sampling,
                                                           autoglm_generation_params params, autoglm_generation ** out);

/* Produce the next piece of text into buf (NUL-terminated; *n_written bytes without the NUL) and set
 * *done = false; or, when the generation has finished, write "" and set *n_written = 0, *done = true.
 * Every piece is whole UTF-8 characters (bytes the model produced that are not valid UTF-8 come one
 * at a time). A piece longer than buf_size - 1 is cut at a character boundary and the rest is returned
 * by the next calls: no text is lost. If not even the next character fits (it needs up to 4 bytes + NUL,
 * so buf_size >= 5 always suffices), nothing is consumed, *n_written is set to the buf_size needed, and
 * AUTOGLM_ERR_BUFFER_TOO_SMALL is returned: call again with a larger buffer. Any other error ends the
 * generation: later calls return the same status. */
AUTOGLM_API autoglm_status autoglm_generation_next(autoglm_generation * gen, char * buf, size_t buf_size, size_t * n_written,
                                                   bool * done);

typedef enum autoglm_finish_reason {
    AUTOGLM_FINISH_NONE = 0,   /* still running (or failed) */
    AUTOGLM_FINISH_STOP = 1,   /* end-of-generation token or a stop string */
    AUTOGLM_FINISH_LENGTH = 2  /* max_tokens reached, or the context is full */
} autoglm_finish_reason;

/* Why the generation finished; AUTOGLM_FINISH_NONE while running or for NULL. */
AUTOGLM_API autoglm_finish_reason autoglm_generation_finish_reason(const autoglm_generation * gen);

typedef struct autoglm_timings {
    uint32_t n_prompt;        /* prompt tokens */
    uint32_t n_prompt_reused; /* of those, taken from the session's cache */
    uint32_t n_generated;     /* tokens generated so far */
    double prompt_ms;         /* time evaluating the non-reused prompt tokens */
    double gen_ms;            /* time generating (sampling + evaluation) */
    double prompt_tokens_per_s;
    double gen_tokens_per_s;
    double image_ms;          /* time encoding the prompt's images (autoglm_generation_start_images) */
    uint32_t n_image_tokens;  /* image tokens in the prompt */
} autoglm_timings;

/* Timings so far (valid during and after the generation). */
AUTOGLM_API autoglm_status autoglm_generation_timings(const autoglm_generation * gen, autoglm_timings * out);

/* Free a generation (finished or not). What it evaluated stays in the session's cache, so a next prompt
 * that extends this conversation (prompt + generated text + new turn) is evaluated only from where it
 * differs. NULL is a no-op. */
AUTOGLM_API void autoglm_generation_free(autoglm_generation * gen);

/* ------------------------------------------------------------------------------------------------
 * Vision: the mmproj file (ViT + merger) turns screenshots into embeddings that fill a prompt's
 * image slots, "<|begin_of_image|><|image|><|end_of_image|>" (what the chat template writes).
 * Images come in as raw pixels: apps decode with their own frameworks (UIImage, CGImage, ...).
 * ---------------------------------------------------------------------------------------------- */

typedef struct autoglm_vision autoglm_vision;

typedef struct autoglm_vision_params {
    int32_t n_threads;  /* CPU threads; 0 (default): the number of physical cores */
    bool use_gpu;       /* encode on the GPU backend when the library has one (default true) */
    size_t cache_bytes; /* embeddings of recent images kept for reuse, by content (default 256 MiB; 0: off) */
    /* the tower's matrices: "auto" (default, also for NULL): BF16 matrices and attention where the CPU
     * has AVX512_BF16, as production servers run this ViT (embeddings within ~2% of F32), else as stored;
     * "file": as stored, in F32 arithmetic (transformers' numbers within 1e-4); "f32", "f16", "bf16" */
    const char * matmul_type;
} autoglm_vision_params;

AUTOGLM_API autoglm_vision_params autoglm_vision_default_params(void);

/* Load a vision projector (mmproj-*.gguf: architecture "clip", projector "glm4v"). Errors:
 * AUTOGLM_ERR_FILE (missing, truncated, another kind of file), AUTOGLM_ERR_OUT_OF_MEMORY. Free *out with
 * autoglm_vision_free. A vision handle may be used from one thread at a time. */
AUTOGLM_API autoglm_status autoglm_vision_load(const char * path, autoglm_vision_params params, autoglm_vision ** out);
AUTOGLM_API void autoglm_vision_free(autoglm_vision * vision);

/* Width of the embeddings it produces (equals the matching text model's n_embd), or a negative status. */
AUTOGLM_API int32_t autoglm_vision_n_embd(const autoglm_vision * vision);

/* Pixels of one image: rows top to bottom, `stride` bytes apart (>= width * channels), 8-bit samples.
 * channels: 3 (RGB), 4 (RGBA, straight alpha: composited onto white, as transformers does) or 1 (gray). */
typedef struct autoglm_image {
    const uint8_t * pixels;
    int32_t width;
    int32_t height;
    size_t stride;
    int32_t channels;
} autoglm_image;

/* Resize budget, in transformers' units (a still image counts twice): 0 = the mmproj's defaults.
 * AutoGLM serves with max_pixels = 5000000 (a 1080x2400 screenshot -> 3,108 image tokens). */
typedef struct autoglm_image_params {
    int64_t min_pixels;
    int64_t max_pixels;
} autoglm_image_params;

AUTOGLM_API autoglm_image_params autoglm_image_default_params(void);

/* The grid of image tokens (rows x columns) a width x height image becomes; no encoding. n_tokens =
 * rows * columns, so the embeddings need rows * columns * n_embd floats. AUTOGLM_ERR_INVALID_ARGUMENT for an
 * empty image or an aspect ratio above 200. */
AUTOGLM_API autoglm_status autoglm_image_grid(const autoglm_vision * vision, int32_t width, int32_t height,
                                              autoglm_image_params params, int32_t * rows, int32_t * columns);

/* Encode one image into embd[0 .. *n_floats) as n_tokens rows of n_embd floats (raster order of the
 * token grid). Caller-buffer rules apply with counts in floats: *n_floats is always set, and with too
 * small a buffer nothing is encoded (size it with autoglm_image_grid, or call with NULL, 0). */
AUTOGLM_API autoglm_status autoglm_image_embed(autoglm_vision * vision, const autoglm_image * image, autoglm_image_params params,
                                               float * embd, size_t embd_max, size_t * n_floats);

/* autoglm_generation_start for a prompt with image slots: images[i] fills the i-th slot (their numbers
 * must match: AUTOGLM_ERR_INVALID_ARGUMENT says how many of each). The prompt is parsed with special
 * tokens. Images are encoded here (or taken from the vision handle's cache); like text, a prompt that
 * repeats the session's cached conversation, images included, is only evaluated from where it differs.
 * `vision` must match the session's model (same n_embd). */
AUTOGLM_API autoglm_status autoglm_generation_start_images(autoglm_session * session, autoglm_vision * vision,
                                                           const char * prompt, const autoglm_image * images, size_t n_images,
                                                           autoglm_image_params image_params, autoglm_sampling_params sampling,
                                                           autoglm_generation_params params, autoglm_generation ** out);

#ifdef __cplusplus
}
#endif

#endif /* AUTOGLM_H */
