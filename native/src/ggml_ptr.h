// Owning handles for ggml objects, so that an error thrown half-way through loading or graph
// building frees everything it had created.
#pragma once

#include <memory>

#include "ggml-backend.h"
#include "ggml.h"

namespace autoglm {

struct ggml_ctx_deleter {
    void operator()(ggml_context * c) const { ggml_free(c); }
};
struct ggml_buf_deleter {
    void operator()(ggml_backend_buffer_t b) const { ggml_backend_buffer_free(b); }
};
struct ggml_sched_deleter {
    void operator()(ggml_backend_sched_t s) const { ggml_backend_sched_free(s); }
};

using ggml_ctx_ptr = std::unique_ptr<ggml_context, ggml_ctx_deleter>;
using ggml_buf_ptr = std::unique_ptr<ggml_backend_buffer, ggml_buf_deleter>;
using ggml_sched_ptr = std::unique_ptr<ggml_backend_sched, ggml_sched_deleter>;

}  // namespace autoglm
