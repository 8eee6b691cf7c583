/* c_api_smoke: drives the public C API end to end, compiled as strict C99 (so it also proves that
 * autoglm.h is plain C). Used by tests/test_c_api.py, which compares its output with the Python API.
 *
 *   c_api_smoke MODEL.gguf PROMPT N_TOKENS
 *
 * Prints "key: value" lines (binary text as hex, so nothing depends on the terminal's encoding) and
 * exits 0 when every check passed, 1 otherwise (the failed check is printed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autoglm.h"

static int g_failed = 0;

#define CHECK(cond)                                                                                        \
    do {                                                                                                   \
        if (!(cond)) {                                                                                     \
            printf("CHECK FAILED (line %d): %s; last error: %s\n", __LINE__, #cond, autoglm_last_error()); \
            g_failed = 1;                                                                                  \
        }                                                                                                  \
    } while (0)

static void print_hex(const char * key, const char * data, size_t n) {
    size_t i;
    printf("%s: ", key);
    for (i = 0; i < n; ++i) printf("%02x", (unsigned char) data[i]);
    printf("\n");
}

/* Text for a human reader on one line: control bytes (newlines too) as \xNN, the rest as is. */
static void print_line(const char * key, const char * data, size_t n) {
    size_t i;
    printf("%s: ", key);
    for (i = 0; i < n; ++i) {
        const unsigned char c = (unsigned char) data[i];
        if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
    printf("\n");
}

/* Growable byte string for collecting generated text. */
typedef struct {
    char * data;
    size_t len, cap;
} text_buf;

static void text_append(text_buf * t, const char * s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->data = (char *) realloc(t->data, t->cap);
        if (!t->data) exit(2);
    }
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
}

/* Runs one generation to the end, reading it through a buffer of buf_size bytes. Counts the calls that
 * returned text and those that reported AUTOGLM_ERR_BUFFER_TOO_SMALL (answered with a large buffer). */
static autoglm_status generate(autoglm_session * s, const char * prompt, autoglm_generation_params gp, size_t buf_size,
                               text_buf * out, int * n_calls, int * n_too_small, autoglm_finish_reason * reason,
                               autoglm_timings * timings) {
    autoglm_generation * gen = NULL;
    char * buf = (char *) malloc(buf_size);
    char big[16];
    autoglm_status st = autoglm_generation_start(s, prompt, true, autoglm_sampling_default_params(), gp, &gen);
    *n_calls = *n_too_small = 0;
    while (st == AUTOGLM_OK) {
        size_t n = 0;
        bool done = false;
        st = autoglm_generation_next(gen, buf, buf_size, &n, &done);
        if (st == AUTOGLM_ERR_BUFFER_TOO_SMALL) {
            /* n is the size needed for the next character: nothing was lost, ask again with room. */
            ++*n_too_small;
            if (n > sizeof big) break;
            st = autoglm_generation_next(gen, big, n, &n, &done);
            if (st == AUTOGLM_OK) text_append(out, big, n);
            continue;
        }
        if (st != AUTOGLM_OK || done) break;
        if (strlen(buf) != n) printf("note: piece with a NUL byte\n");
        text_append(out, buf, n);
        ++*n_calls;
    }
    if (gen) {
        *reason = autoglm_generation_finish_reason(gen);
        autoglm_generation_timings(gen, timings);
    }
    autoglm_generation_free(gen);
    free(buf);
    return st;
}

static int g_log_info = 0;
static void on_log(autoglm_log_level level, const char * msg, void * user) {
    (void) msg;
    ++*(int *) user;
    if (level == AUTOGLM_LOG_INFO) ++g_log_info;
}

static float g_progress_last = -1.0f;
static bool on_progress(float p, void * user) {
    g_progress_last = p;
    return user == NULL; /* any user data: abort */
}

static void print_error(const char * key, autoglm_status st) {
    printf("%s: %s: %s\n", key, autoglm_status_string(st), autoglm_last_error());
}

/* First occurrence of needle in hay (binary-safe), or -1. */
static long find_bytes(const char * hay, size_t n_hay, const char * needle, size_t n_needle) {
    size_t i;
    for (i = 0; i + n_needle <= n_hay; ++i) {
        if (memcmp(hay + i, needle, n_needle) == 0) return (long) i;
    }
    return -1;
}

int main(int argc, char ** argv) {
    autoglm_model * model = NULL;
    autoglm_session * session = NULL;
    autoglm_status st;
    int n_log = 0;
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT N_TOKENS\n", argv[0]);
        return 2;
    }
    const char * path = argv[1];
    const char * prompt = argv[2];
    const int n_tokens = atoi(argv[3]);

    printf("version: %s\n", autoglm_version());
    printf("system_info: %s\n", autoglm_system_info());
    CHECK(strcmp(autoglm_version(), AUTOGLM_VERSION_STRING) == 0);
    autoglm_log_set(on_log, &n_log);

    /* --- error paths ------------------------------------------------------------------------- */
    {
        autoglm_model * m = NULL;
        st = autoglm_model_load("/nonexistent/dir/model.gguf", autoglm_model_default_params(), &m);
        print_error("error_missing_file", st);
        CHECK(st == AUTOGLM_ERR_FILE && m == NULL && strstr(autoglm_last_error(), "/nonexistent/dir/model.gguf"));
        st = autoglm_model_load(NULL, autoglm_model_default_params(), &m);
        print_error("error_null_path", st);
        CHECK(st == AUTOGLM_ERR_INVALID_ARGUMENT && strstr(autoglm_last_error(), "path is NULL"));
        st = autoglm_model_load(path, autoglm_model_default_params(), NULL);
        print_error("error_null_out", st);
        CHECK(st == AUTOGLM_ERR_INVALID_ARGUMENT && strstr(autoglm_last_error(), "out is NULL"));
        CHECK(autoglm_model_n_vocab(NULL) == AUTOGLM_ERR_INVALID_ARGUMENT);
        print_error("error_null_model", AUTOGLM_ERR_INVALID_ARGUMENT);
        CHECK(autoglm_model_name(NULL) == NULL);
        st = autoglm_generation_next(NULL, NULL, 0, NULL, NULL);
        print_error("error_null_gen", st);
        CHECK(st == AUTOGLM_ERR_INVALID_ARGUMENT && strstr(autoglm_last_error(), "gen is NULL"));
        autoglm_model_free(NULL);
        autoglm_session_free(NULL);
        autoglm_generation_free(NULL);
        CHECK(strcmp(autoglm_status_string(AUTOGLM_ERR_CONTEXT_FULL), "AUTOGLM_ERR_CONTEXT_FULL") == 0);
    }
    {
        autoglm_model_params mp = autoglm_model_default_params();
        autoglm_model * m = NULL;
        mp.progress_callback = on_progress;
        mp.progress_callback_user_data = &mp; /* non-NULL: abort at the first report */
        st = autoglm_model_load(path, mp, &m);
        print_error("error_aborted", st);
        CHECK(st == AUTOGLM_ERR_ABORTED && m == NULL);
    }

    /* --- model -------------------------------------------------------------------------------- */
    {
        autoglm_model_params mp = autoglm_model_default_params();
        mp.progress_callback = on_progress;
        st = autoglm_model_load(path, mp, &model);
        CHECK(st == AUTOGLM_OK && model != NULL);
        if (st != AUTOGLM_OK) return 1;
        CHECK(g_progress_last == 1.0f);
        CHECK(g_log_info > 0); /* the load is logged at INFO through our callback */
        printf("model: n_vocab=%d n_ctx_train=%d n_embd=%d n_layer=%d name=%s\n", autoglm_model_n_vocab(model),
               autoglm_model_n_ctx_train(model), autoglm_model_n_embd(model), autoglm_model_n_layer(model),
               autoglm_model_name(model));
        printf("chat_template_bytes: %lu\n", (unsigned long) strlen(autoglm_model_chat_template(model)));
    }

    /* --- tokens ------------------------------------------------------------------------------- */
    {
        size_t n = 0, i, n_text = 0;
        autoglm_token * toks;
        char * text;
        st = autoglm_tokenize(model, prompt, true, NULL, 0, &n); /* size query */
        CHECK(st == AUTOGLM_ERR_BUFFER_TOO_SMALL && n > 0);
        st = autoglm_tokenize(model, NULL, true, NULL, 0, &n);
        print_error("error_null_text", st);
        CHECK(st == AUTOGLM_ERR_INVALID_ARGUMENT && strstr(autoglm_last_error(), "text is NULL"));
        autoglm_tokenize(model, prompt, true, NULL, 0, &n);
        toks = (autoglm_token *) malloc(n * sizeof *toks);
        st = autoglm_tokenize(model, prompt, true, toks, n, &n);
        CHECK(st == AUTOGLM_OK);
        printf("tokens:");
        for (i = 0; i < n; ++i) printf(" %d", toks[i]);
        printf("\n");
        st = autoglm_detokenize(model, toks, n, NULL, 0, &n_text);
        CHECK(st == AUTOGLM_ERR_BUFFER_TOO_SMALL && n_text == strlen(prompt));
        text = (char *) malloc(n_text + 1);
        st = autoglm_detokenize(model, toks, n, text, n_text + 1, &n_text);
        CHECK(st == AUTOGLM_OK && strcmp(text, prompt) == 0); /* round trip */
        {
            char piece[64];
            size_t np = 0;
            st = autoglm_token_to_piece(model, toks[0], piece, sizeof piece, &np);
            CHECK(st == AUTOGLM_OK && np > 0 && memcmp(piece, prompt, np) == 0);
            st = autoglm_token_to_piece(model, autoglm_model_n_vocab(model), piece, sizeof piece, &np);
            print_error("error_bad_token", st);
            CHECK(st == AUTOGLM_ERR_INVALID_ARGUMENT);
        }
        free(text);
        free(toks);
    }

    /* --- chat formatting ---------------------------------------------------------------------- */
    {
        const autoglm_chat_message msgs[] = {{"system", "You are a phone agent."},
                                             {"user", "Open Settings and turn on Wi-Fi."},
                                             {"assistant", "do(action=\"Launch\", app=\"Settings\")"},
                                             {"user", "Now Bluetooth."}};
        const autoglm_chat_message bad[] = {{"robot", "hi"}};
        char small[8];
        char * out;
        size_t n = 0;
        st = autoglm_chat_format(msgs, 4, true, small, sizeof small, &n);
        CHECK(st == AUTOGLM_ERR_BUFFER_TOO_SMALL && n > sizeof small);
        out = (char *) malloc(n + 1);
        st = autoglm_chat_format(msgs, 4, true, out, n + 1, &n);
        CHECK(st == AUTOGLM_OK && strlen(out) == n);
        print_hex("chat_hex", out, n);
        free(out);
        st = autoglm_chat_format(bad, 1, true, small, sizeof small, &n);
        print_error("error_bad_role", st);
        CHECK(st == AUTOGLM_ERR_INVALID_ARGUMENT && strstr(autoglm_last_error(), "robot"));
    }

    /* --- generation --------------------------------------------------------------------------- */
    {
        autoglm_session_params sp = autoglm_session_default_params();
        autoglm_generation_params gp = autoglm_generation_default_params();
        text_buf tiny = {NULL, 0, 0}, large = {NULL, 0, 0}, stopped = {NULL, 0, 0};
        int calls = 0, too_small = 0, calls_large = 0, too_small_large = 0;
        autoglm_finish_reason reason = AUTOGLM_FINISH_NONE;
        autoglm_timings t;
        memset(&t, 0, sizeof t);
        sp.n_ctx = 512;
        st = autoglm_session_create(model, sp, &session);
        CHECK(st == AUTOGLM_OK);
        if (st != AUTOGLM_OK) return 1;
        gp.max_tokens = n_tokens;

        /* A 3-byte buffer holds 2 bytes of text: longer pieces come in parts, 3-byte characters
         * need the AUTOGLM_ERR_BUFFER_TOO_SMALL answer. */
        st = generate(session, prompt, gp, 3, &tiny, &calls, &too_small, &reason, &t);
        CHECK(st == AUTOGLM_OK);
        print_hex("generated_hex", tiny.data ? tiny.data : "", tiny.len);
        print_line("generated_text", tiny.data ? tiny.data : "", tiny.len);
        printf("finish_reason: %d\n", (int) reason);
        printf("tiny_buffer: calls=%d too_small=%d\n", calls, too_small);
        printf("timings: n_prompt=%u n_prompt_reused=%u n_generated=%u prompt_ms=%.3f gen_ms=%.3f\n", t.n_prompt,
               t.n_prompt_reused, t.n_generated, t.prompt_ms, t.gen_ms);
        CHECK(t.n_generated == (unsigned) n_tokens || reason == AUTOGLM_FINISH_STOP);
        CHECK(t.n_prompt_reused == 0);

        /* The same prompt again, through a roomy buffer: same text, and the cached prompt is reused. */
        st = generate(session, prompt, gp, 256, &large, &calls_large, &too_small_large, &reason, &t);
        CHECK(st == AUTOGLM_OK && too_small_large == 0);
        CHECK(large.len == tiny.len && (tiny.len == 0 || memcmp(large.data, tiny.data, tiny.len) == 0));
        CHECK(t.n_prompt_reused == t.n_prompt - 1);
        printf("reused: %u of %u\n", t.n_prompt_reused, t.n_prompt);

        /* A stop string taken from the middle of that text: output ends right before its first occurrence. */
        if (tiny.len >= 6 && tiny.data[tiny.len / 2] != '\0' && tiny.data[tiny.len / 2 + 1] != '\0') {
            char stop[3];
            const char * stops[1];
            long at;
            memcpy(stop, tiny.data + tiny.len / 2, 2);
            stop[2] = '\0';
            stops[0] = stop;
            at = find_bytes(tiny.data, tiny.len, stop, strlen(stop));
            gp.stop = stops;
            gp.n_stop = 1;
            st = generate(session, prompt, gp, 64, &stopped, &calls, &too_small, &reason, &t);
            CHECK(st == AUTOGLM_OK && reason == AUTOGLM_FINISH_STOP);
            CHECK(at >= 0 && stopped.len == (size_t) at && (at == 0 || memcmp(stopped.data, tiny.data, (size_t) at) == 0));
            printf("stop_string: ok at %ld\n", at);
            gp.stop = NULL;
            gp.n_stop = 0;
        }

        /* A newer generation or a reset ends the older one. */
        {
            autoglm_generation *g1 = NULL, *g2 = NULL;
            char buf[32];
            size_t n = 0;
            bool done = false;
            CHECK(autoglm_generation_start(session, prompt, true, autoglm_sampling_default_params(), gp, &g1) == AUTOGLM_OK);
            CHECK(autoglm_generation_start(session, prompt, true, autoglm_sampling_default_params(), gp, &g2) == AUTOGLM_OK);
            st = autoglm_generation_next(g1, buf, sizeof buf, &n, &done);
            print_error("error_superseded", st);
            CHECK(st == AUTOGLM_ERR_INVALID_ARGUMENT);
            CHECK(autoglm_generation_next(g2, buf, sizeof buf, &n, &done) == AUTOGLM_OK);
            CHECK(autoglm_session_reset(session) == AUTOGLM_OK && autoglm_session_n_past(session) == 0);
            CHECK(autoglm_generation_next(g2, buf, sizeof buf, &n, &done) == AUTOGLM_ERR_INVALID_ARGUMENT);
            autoglm_generation_free(g1);
            autoglm_generation_free(g2);
        }
        free(tiny.data);
        free(large.data);
        free(stopped.data);
    }

    /* --- context full: a session too small for the prompt -------------------------------------- */
    {
        autoglm_session_params sp = autoglm_session_default_params();
        autoglm_session * small = NULL;
        autoglm_generation * g = NULL;
        sp.n_ctx = 2;
        sp.n_batch = 2;
        CHECK(autoglm_session_create(model, sp, &small) == AUTOGLM_OK);
        st = autoglm_generation_start(small, "a long enough prompt for two cells", true, autoglm_sampling_default_params(),
                                      autoglm_generation_default_params(), &g);
        print_error("error_context_full", st);
        CHECK(st == AUTOGLM_ERR_CONTEXT_FULL && g == NULL);
        autoglm_session_free(small);
    }

    /* --- handles may be freed in any order: the session keeps the model alive ------------------ */
    {
        autoglm_generation * g = NULL;
        autoglm_generation_params gp = autoglm_generation_default_params();
        char buf[64];
        size_t n = 0;
        bool done = false;
        int pieces = 0;
        gp.max_tokens = 3;
        autoglm_model_free(model);
        model = NULL;
        CHECK(autoglm_generation_start(session, prompt, true, autoglm_sampling_default_params(), gp, &g) == AUTOGLM_OK);
        autoglm_session_free(session);
        session = NULL;
        while (autoglm_generation_next(g, buf, sizeof buf, &n, &done) == AUTOGLM_OK && !done) ++pieces;
        CHECK(done && pieces > 0);
        autoglm_generation_free(g);
    }

    autoglm_log_set(NULL, NULL);
    printf("log_messages: %d\n", n_log);
    printf(g_failed ? "FAILED\n" : "OK\n");
    return g_failed ? 1 : 0;
}
