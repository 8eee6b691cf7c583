// Errors inside the core: one exception type carrying a message that names what was wrong,
// where, and what was expected. The C API and the Python binding translate it; nothing in the core
// calls exit() or abort() on user input. The subtypes exist so that the C API can return a status
// code a program can act on (retry with a smaller n_ctx, report a bad file, ...) without parsing text;
// code that does not care catches autoglm::error (or invalid_argument) as before.
#pragma once

#include <stdexcept>
#include <string>

namespace autoglm {

struct error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Bad argument from the caller (wrong shape/type/value), as opposed to an I/O or internal error.
struct invalid_argument : error {
    using error::error;
};

// The conversation does not fit: a prompt or an evaluation would exceed n_ctx.
struct context_full : invalid_argument {
    using invalid_argument::invalid_argument;
};

// A model file that cannot be opened, is not GGUF, or is not a usable GLM-4 model.
struct file_error : error {
    using error::error;
};

// A session used by two threads at once, or a generation continued after its session was used by
// something else since (its cache no longer holds what the generation left there).
struct busy : invalid_argument {
    using invalid_argument::invalid_argument;
};

// A caller's callback (load progress, session abort check) asked to stop.
struct aborted : error {
    using error::error;
};

// A backend could not allocate memory (weights, KV cache, compute buffers).
struct out_of_memory : error {
    using error::error;
};

}  // namespace autoglm

#define AUTOGLM_CHECK_ARG(cond, msg)                                      \
    do {                                                                  \
        if (!(cond)) throw ::autoglm::invalid_argument(std::string(msg)); \
    } while (0)
