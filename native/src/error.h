// Errors inside the core: one exception type carrying a message that names what was wrong,
// where, and what was expected. The C API (later) and the Python binding translate it; nothing
// in the core calls exit() or abort() on user input.
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

}  // namespace autoglm

#define AUTOGLM_CHECK_ARG(cond, msg)                                   \
    do {                                                               \
        if (!(cond)) throw ::autoglm::invalid_argument(std::string(msg)); \
    } while (0)
