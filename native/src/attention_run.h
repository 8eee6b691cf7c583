// Our CPU attention kernels (cpu_attention.h) on plain arrays, through a one-op graph on ggml's CPU
// backend, as the decoder and the vision tower run them: for tests (the kernels against float64 at
// shapes no model fixture has) and bench/bench_attention.py.
#pragma once

#include <cstdint>
#include <string>

namespace autoglm {

// out[n][n_head][hd] = softmax(q k^T / sqrt(hd) + mask) v for q [n][n_head][hd], k and v
// [n_kv][n_head_kv][hd] (n_head a multiple of n_head_kv: grouped-query), mask null or F16 bits
// [n][n_kv] of 0 / -inf; `kernel` as cpu_attention_kernel takes it (not "ggml"). Throws
// invalid_argument for bad shapes or a kernel this CPU lacks.
void attention_run(const float * q, const float * k, const float * v, const uint16_t * mask, int64_t hd, int64_t n_head,
                   int64_t n, int64_t n_head_kv, int64_t n_kv, const std::string & kernel, int n_threads, float * out);

}  // namespace autoglm
