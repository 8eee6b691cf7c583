// Shared by the C API's translation units (c_api.cpp: errors, logging, model, tokens, session;
// c_api_generation.cpp: generation; c_api_vision.cpp: images): the error plumbing and the handle structs. Internal: the public
// surface is include/autoglm.h alone.
#pragma once

#include "autoglm.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include "error.h"
#include "generate.h"
#include "session.h"
#include "text_model.h"
#include "vision_model.h"

namespace autoglm::capi {

// Sets the calling thread's autoglm_last_error() to "fn: msg" and returns st. Never throws.
autoglm_status fail(const char * fn, autoglm_status st, const std::string & msg) noexcept;

// For getters that return a value rather than a status: records "fn: name is NULL" and returns
// AUTOGLM_ERR_INVALID_ARGUMENT. Never throws.
int32_t null_handle(const char * fn, const char * name) noexcept;

// The thread-local message itself (c_api_generation.cpp keeps a copy of it when a generation fails).
const std::string & last_error() noexcept;

// Routes a message of this library to the log callback (or stderr).
void emit(autoglm_log_level level, const char * msg);

// Runs body() (which returns a status) and maps whatever it throws. The most specific core types
// come first: context_full is an invalid_argument, and every core type is an autoglm::error.
template <class F>
autoglm_status guarded(const char * fn, F && body) noexcept {
    try {
        return body();
    } catch (const autoglm::context_full & e) {
        return fail(fn, AUTOGLM_ERR_CONTEXT_FULL, e.what());
    } catch (const autoglm::invalid_argument & e) {
        return fail(fn, AUTOGLM_ERR_INVALID_ARGUMENT, e.what());
    } catch (const autoglm::file_error & e) {
        return fail(fn, AUTOGLM_ERR_FILE, e.what());
    } catch (const autoglm::aborted & e) {
        return fail(fn, AUTOGLM_ERR_ABORTED, e.what());
    } catch (const autoglm::out_of_memory & e) {
        return fail(fn, AUTOGLM_ERR_OUT_OF_MEMORY, e.what());
    } catch (const autoglm::error & e) {
        return fail(fn, AUTOGLM_ERR_INTERNAL, e.what());
    } catch (const std::bad_alloc &) {
        return fail(fn, AUTOGLM_ERR_OUT_OF_MEMORY, "out of memory");
    } catch (const std::exception & e) {
        return fail(fn, AUTOGLM_ERR_INTERNAL, e.what());
    } catch (...) {
        return fail(fn, AUTOGLM_ERR_INTERNAL, "unknown exception");
    }
}

// Inside guarded(): a NULL argument becomes AUTOGLM_ERR_INVALID_ARGUMENT naming it.
inline void require(const void * p, const char * name) {
    if (!p) throw autoglm::invalid_argument(std::string(name) + " is NULL");
}

struct model_state {
    std::unique_ptr<autoglm::text_model> tm;
    // Sessions of one model share its backends (a CPU backend has one work buffer): one evaluation at a time.
    std::mutex compute;
};

struct session_state {
    std::shared_ptr<model_state> model;  // declared first: destroyed after the session that refers to it
    std::unique_ptr<autoglm::session> sess;
    // Bumped by each generation start and by reset: a generation holding an older value would read a
    // cache that has changed under it, so it refuses to continue.
    uint64_t epoch = 0;
};

struct vision_state;  // c_api_vision.cpp

// Starts a generation on `session` with the generator make() builds (under the model's compute lock).
autoglm_status start_generation(autoglm_session * session, const autoglm_sampling_params & sampling,
                                const autoglm_generation_params & params, autoglm_generation ** out,
                                const std::function<std::unique_ptr<autoglm::generator>(
                                    autoglm::session &, const autoglm::tokenizer &, const autoglm::generate_params &)> & make);

}  // namespace autoglm::capi

// The opaque handles. Each holds shared ownership, so they can be freed in any order.
struct autoglm_model {
    std::shared_ptr<autoglm::capi::model_state> s;
};

struct autoglm_session {
    std::shared_ptr<autoglm::capi::session_state> s;
};

struct autoglm_generation {
    std::shared_ptr<autoglm::capi::session_state> s;
    uint64_t epoch = 0;
    std::unique_ptr<autoglm::generator> gen;
    std::string pending;     // the current piece; bytes before pending_off were already handed out
    size_t pending_off = 0;
    bool finished = false;   // the generator has nothing more (pending may still hold text)
    autoglm_status failed = AUTOGLM_OK;  // an error inside the core ends the generation for good
    std::string failed_msg;
    double image_ms = 0.0;             // encoding this prompt's images
    uint32_t n_image_tokens = 0;
};

struct autoglm_vision {
    std::shared_ptr<autoglm::capi::vision_state> s;
};
