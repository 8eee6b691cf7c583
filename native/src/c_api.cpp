// The C API (include/autoglm.h), part 1: errors, logging, model, tokens, chat, session. A thin shell
// over the C++ core: every entry point runs its body in guarded() (c_api_internal.h), which turns any
// exception into a status code plus a thread-local message, so nothing ever unwinds into C (or Swift).
#include "backend.h"
#include "c_api_internal.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "build_info.h"
#include "chat_template.h"
#include "ggml.h"

namespace autoglm::capi {

namespace {

thread_local std::string g_last_error;

// The caller-buffer convention of the header: always report the full size; write only if it fits.
autoglm_status copy_text(const char * fn, const std::string & s, char * buf, size_t buf_size, size_t * n_out) {
    require(n_out, "n_out");
    *n_out = s.size();
    if (buf_size < s.size() + 1) {
        return fail(fn, AUTOGLM_ERR_BUFFER_TOO_SMALL,
                    "the result needs " + std::to_string(s.size() + 1) + " bytes (with the NUL), buf_size is " +
                        std::to_string(buf_size));
    }
    require(buf, "buf");
    std::memcpy(buf, s.data(), s.size());
    buf[s.size()] = '\0';
    return AUTOGLM_OK;
}

struct log_sink {
    std::mutex mu;
    autoglm_log_callback cb = nullptr;
    void * user = nullptr;
};

log_sink & sink() {
    static log_sink s;  // function-local: initialized on first use, safely, whatever the load order
    return s;
}

void current_sink(autoglm_log_callback & cb, void *& user) {
    std::lock_guard<std::mutex> lock(sink().mu);
    cb = sink().cb;
    user = sink().user;
}

// ggml's messages, forwarded with their level; a continuation part gets the level of its line.
// Called from ggml's C code, so nothing may escape.
void ggml_forward(ggml_log_level level, const char * text, void *) noexcept {
    thread_local autoglm_log_level last = AUTOGLM_LOG_INFO;
    if (level == GGML_LOG_LEVEL_NONE) return;
    if (level != GGML_LOG_LEVEL_CONT) last = (autoglm_log_level) level;
    try {
        autoglm_log_callback cb;
        void * user;
        current_sink(cb, user);
        if (cb) cb(last, text, user);
    } catch (...) {}
}

}  // namespace

autoglm_status fail(const char * fn, autoglm_status st, const std::string & msg) noexcept {
    try {
        g_last_error = std::string(fn) + ": " + msg;
    } catch (...) {  // no memory even for the message: the status must still get through
        g_last_error.clear();
    }
    return st;
}

int32_t null_handle(const char * fn, const char * name) noexcept {
    try {
        return (int32_t) fail(fn, AUTOGLM_ERR_INVALID_ARGUMENT, std::string(name) + " is NULL");
    } catch (...) {
        return (int32_t) fail(fn, AUTOGLM_ERR_INVALID_ARGUMENT, std::string());
    }
}

const std::string & last_error() noexcept { return g_last_error; }

void emit(autoglm_log_level level, const char * msg) {
    autoglm_log_callback cb;
    void * user;
    current_sink(cb, user);
    if (cb) {
        cb(level, msg, user);
    } else if (level >= AUTOGLM_LOG_INFO) {
        std::fprintf(stderr, "autoglm: %s\n", msg);
    }
}

}  // namespace autoglm::capi

using namespace autoglm::capi;

// ---------------------------------------------------------------------------------------- general

extern "C" {

const char * autoglm_status_string(autoglm_status status) {
    switch (status) {
        case AUTOGLM_OK: return "AUTOGLM_OK";
        case AUTOGLM_ERR_INVALID_ARGUMENT: return "AUTOGLM_ERR_INVALID_ARGUMENT";
        case AUTOGLM_ERR_BUFFER_TOO_SMALL: return "AUTOGLM_ERR_BUFFER_TOO_SMALL";
        case AUTOGLM_ERR_FILE: return "AUTOGLM_ERR_FILE";
        case AUTOGLM_ERR_CONTEXT_FULL: return "AUTOGLM_ERR_CONTEXT_FULL";
        case AUTOGLM_ERR_ABORTED: return "AUTOGLM_ERR_ABORTED";
        case AUTOGLM_ERR_OUT_OF_MEMORY: return "AUTOGLM_ERR_OUT_OF_MEMORY";
        case AUTOGLM_ERR_INTERNAL: return "AUTOGLM_ERR_INTERNAL";
    }
    return "unknown status";
}

const char * autoglm_last_error(void) { return last_error().c_str(); }

const char * autoglm_version(void) { return AUTOGLM_VERSION_STRING; }

const char * autoglm_system_info(void) {
    try {
        static const std::string info = [] {
            std::string s =
                std::string("autoglm ") + AUTOGLM_VERSION_STRING + "; ggml " + autoglm::ggml_version_string() + "; backends:";
            const auto names = autoglm::backend_names();
            for (size_t i = 0; i < names.size(); ++i) s += (i ? ", " : " ") + names[i];
            return s;
        }();
        return info.c_str();
    } catch (...) {  // out of memory building it: the next call tries again
        return "autoglm " AUTOGLM_VERSION_STRING;
    }
}

void autoglm_log_set(autoglm_log_callback callback, void * user_data) {
    try {
        std::lock_guard<std::mutex> lock(sink().mu);
        sink().cb = callback;
        sink().user = user_data;
    } catch (...) {  // std::mutex::lock failing: leave the sink as it was
        return;
    }
    // Without a callback ggml's messages go to our default (warnings and errors on stderr).
    autoglm::set_ggml_logger(callback ? ggml_forward : nullptr);
}

// ---------------------------------------------------------------------------------------- model

autoglm_model_params autoglm_model_default_params(void) {
    autoglm_model_params p;
    p.n_gpu_layers = 0;
    p.n_threads = 0;
    p.use_repack = true;
    p.progress_callback = nullptr;
    p.progress_callback_user_data = nullptr;
    return p;
}

autoglm_status autoglm_model_load(const char * path, autoglm_model_params params, autoglm_model ** out) {
    return guarded(__func__, [&] {
        require(path, "path");
        require(out, "out");
        if (params.n_threads < 0) {
            throw autoglm::invalid_argument("n_threads must be >= 0 (0 = physical cores), got " +
                                            std::to_string(params.n_threads));
        }
        autoglm::model_params p;
        p.n_gpu_layers = params.n_gpu_layers;
        p.n_threads = params.n_threads;
        p.repack = params.use_repack;
        if (params.progress_callback) {
            const auto cb = params.progress_callback;
            void * const user = params.progress_callback_user_data;
            p.progress = [cb, user](float f) { return cb(f, user); };
        }
        p.log = [](const std::string & msg) { emit(AUTOGLM_LOG_WARN, msg.c_str()); };

        auto st = std::make_shared<model_state>();
        st->tm = std::make_unique<autoglm::text_model>(path, p);
        const auto & hp = st->tm->hparams();
        emit(AUTOGLM_LOG_INFO,
             (std::string(path) + ": " + std::to_string(hp.n_layer) + " layers, n_embd " + std::to_string(hp.n_embd) +
              ", vocab " + std::to_string(hp.n_vocab) + ", " + std::to_string(st->tm->weight_bytes() >> 20) +
              " MiB of weights on " + st->tm->backends().describe())
                 .c_str());
        *out = new autoglm_model{std::move(st)};
        return AUTOGLM_OK;
    });
}

void autoglm_model_free(autoglm_model * model) { delete model; }

int32_t autoglm_model_n_vocab(const autoglm_model * model) {
    return model ? (int32_t) model->s->tm->hparams().n_vocab : null_handle(__func__, "model");
}

int32_t autoglm_model_n_ctx_train(const autoglm_model * model) {
    return model ? (int32_t) model->s->tm->hparams().n_ctx_train : null_handle(__func__, "model");
}

int32_t autoglm_model_n_embd(const autoglm_model * model) {
    return model ? (int32_t) model->s->tm->hparams().n_embd : null_handle(__func__, "model");
}

int32_t autoglm_model_n_layer(const autoglm_model * model) {
    return model ? (int32_t) model->s->tm->hparams().n_layer : null_handle(__func__, "model");
}

const char * autoglm_model_name(const autoglm_model * model) {
    if (!model) return null_handle(__func__, "model"), nullptr;
    return model->s->tm->name().c_str();
}

const char * autoglm_model_chat_template(const autoglm_model * model) {
    if (!model) return null_handle(__func__, "model"), nullptr;
    return model->s->tm->chat_template().c_str();
}

bool autoglm_token_is_eog(const autoglm_model * model, autoglm_token token) {
    if (!model) return null_handle(__func__, "model"), false;
    const auto & eog = model->s->tm->eog_ids();
    return std::binary_search(eog.begin(), eog.end(), token);  // eog_ids() is sorted
}

// ---------------------------------------------------------------------------------------- tokens, chat

autoglm_status autoglm_tokenize(const autoglm_model * model, const char * text, bool parse_special, autoglm_token * tokens,
                                size_t n_tokens_max, size_t * n_tokens) {
    return guarded(__func__, [&] {
        require(model, "model");
        require(text, "text");
        require(n_tokens, "n_tokens");
        const std::vector<int32_t> ids = model->s->tm->tok().encode(text, parse_special);
        *n_tokens = ids.size();
        if (n_tokens_max < ids.size()) {
            return fail(
                __func__, AUTOGLM_ERR_BUFFER_TOO_SMALL,
                "the text has " + std::to_string(ids.size()) + " tokens, n_tokens_max is " + std::to_string(n_tokens_max));
        }
        if (!ids.empty()) require(tokens, "tokens");
        std::copy(ids.begin(), ids.end(), tokens);
        return AUTOGLM_OK;
    });
}

autoglm_status autoglm_token_to_piece(const autoglm_model * model, autoglm_token token, char * buf, size_t buf_size,
                                      size_t * n_out) {
    return guarded(__func__, [&] {
        require(model, "model");
        return copy_text(__func__, model->s->tm->tok().token_bytes(token), buf, buf_size, n_out);
    });
}

autoglm_status autoglm_detokenize(const autoglm_model * model, const autoglm_token * tokens, size_t n_tokens, char * buf,
                                  size_t buf_size, size_t * n_out) {
    return guarded(__func__, [&] {
        require(model, "model");
        if (n_tokens) require(tokens, "tokens");
        const std::vector<int32_t> ids(tokens, tokens + n_tokens);
        return copy_text(__func__, model->s->tm->tok().decode(ids), buf, buf_size, n_out);
    });
}

autoglm_status autoglm_chat_format(const autoglm_chat_message * messages, size_t n_messages, bool add_generation_prompt,
                                   char * buf, size_t buf_size, size_t * n_out) {
    return guarded(__func__, [&] {
        if (n_messages) require(messages, "messages");
        std::vector<autoglm::chat_message> msgs(n_messages);
        for (size_t i = 0; i < n_messages; ++i) {
            if (!messages[i].role) throw autoglm::invalid_argument("messages[" + std::to_string(i) + "].role is NULL");
            msgs[i].role = messages[i].role;
            if (messages[i].content) {
                autoglm::chat_part part;
                part.text = messages[i].content;
                msgs[i].parts.push_back(std::move(part));
            }
        }
        return copy_text(__func__, autoglm::format_glm4v_chat(msgs, add_generation_prompt), buf, buf_size, n_out);
    });
}

// ---------------------------------------------------------------------------------------- session

autoglm_session_params autoglm_session_default_params(void) {
    const autoglm::session_params d;
    autoglm_session_params p;
    p.n_ctx = d.n_ctx;
    p.n_batch = d.n_batch;
    p.kv_type = AUTOGLM_KV_F16;
    p.abort_callback = nullptr;
    p.abort_callback_user_data = nullptr;
    return p;
}

autoglm_status autoglm_session_create(autoglm_model * model, autoglm_session_params params, autoglm_session ** out) {
    return guarded(__func__, [&] {
        require(model, "model");
        require(out, "out");
        autoglm::session_params p;
        p.n_ctx = params.n_ctx;
        p.n_batch = params.n_batch;
        switch (params.kv_type) {
            case AUTOGLM_KV_F16: p.kv_type = GGML_TYPE_F16; break;
            case AUTOGLM_KV_F32: p.kv_type = GGML_TYPE_F32; break;
            default:
                throw autoglm::invalid_argument("kv_type " + std::to_string((int) params.kv_type) + " is not an autoglm_kv_type");
        }
        auto st = std::make_shared<session_state>();
        st->model = model->s;
        {
            std::lock_guard<std::mutex> lock(st->model->compute);
            st->sess = std::make_unique<autoglm::session>(*st->model->tm, p);
        }
        if (params.abort_callback) {
            const auto cb = params.abort_callback;
            void * const user = params.abort_callback_user_data;
            st->sess->progress = [cb, user](uint32_t, uint32_t) { return !cb(user); };
        }
        *out = new autoglm_session{std::move(st)};
        return AUTOGLM_OK;
    });
}

void autoglm_session_free(autoglm_session * session) { delete session; }

autoglm_status autoglm_session_reset(autoglm_session * session) {
    return guarded(__func__, [&] {
        require(session, "session");
        session->s->sess->truncate(0);
        session->s->epoch++;
        return AUTOGLM_OK;
    });
}

int32_t autoglm_session_n_ctx(const autoglm_session * session) {
    return session ? (int32_t) session->s->sess->n_ctx() : null_handle(__func__, "session");
}

int32_t autoglm_session_n_past(const autoglm_session * session) {
    return session ? (int32_t) session->s->sess->n_past() : null_handle(__func__, "session");
}

// ---------------------------------------------------------------------------------------- generation

}  // extern "C"
