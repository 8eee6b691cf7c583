// Small graph-building helpers shared by the text and vision graphs.
#pragma once

#include "ggml.h"

namespace autoglm {

// Every intermediate gets a name ("attn_norm-3") so AUTOGLM_DUMP_TENSORS (tensor_dump.h) can write it
// for comparison with the PyTorch reference's hooks.
inline ggml_tensor * named(ggml_tensor * t, const char * name, int il = -1) {
    if (il >= 0) ggml_format_name(t, "%s-%d", name, il);
    else ggml_set_name(t, name);
    return t;
}

// RMSNorm with an optional weight: w * x / sqrt(mean(x^2) + eps).
inline ggml_tensor * rms_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, float eps) {
    ggml_tensor * y = ggml_rms_norm(ctx, x, eps);
    return w ? ggml_mul(ctx, y, w) : y;
}

// y = W x (+ b)
inline ggml_tensor * linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * b) {
    ggml_tensor * y = ggml_mul_mat(ctx, w, x);
    return b ? ggml_add(ctx, y, b) : y;
}

}  // namespace autoglm
