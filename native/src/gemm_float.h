// Our GEMM for float weights (F32, F16, BF16) against F32 activations (issue #15): the vision tower's
// and the merger's matmuls, which ggml runs with its F16 x F16 kernels (activations rounded to F16)
// at about a third of the F32 FMA peak on AVX-512. Here weights are converted to F32 once per packed
// block and each output is one F32 FMA chain in k order, so the result is exactly
// sum_k fmaf(a[k], w[k], s) whatever the blocking, the threads or the ISA (AVX2 or AVX-512, chosen at
// run time like the quantized GEMMs: gemm.h).
// The exception is BF16 weights where the CPU has AVX512_BF16 (gemm_isa::avx512_bf16): there the
// activations are rounded to BF16 too and vdpbf16ps sums the products of pairs along k, at twice the
// FMA rate; that is what a bf16 ViT computes (ggml's BF16 matmul, vLLM), within BF16's bounds.
#pragma once

#include <cstdint>

#include "gemm.h"
#include "ggml.h"

namespace autoglm {

// Whether ggml_mul_mat(w, x) should run as float_gemm_mul_mat: an F32/F16/BF16 2-D weight in CPU
// memory, x F32 with contiguous rows, at least 32 rows, an AVX2 CPU, AUTOGLM_GEMM not "ggml".
bool float_gemm_applies(const ggml_tensor * w, const ggml_tensor * x);

// ggml_mul_mat(w, x) as one custom op on ggml's CPU threads (w a source: a plain host buffer).
ggml_tensor * float_gemm_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x);

// c[M][N] = a[M][K] x w^T with w N rows of K `type` elements, on n_threads threads (tests, benchmarks;
// gemm_run forwards float types here).
void float_gemm_run(ggml_type type, const void * w, int64_t n, int64_t k, const float * a, int64_t m, float * c, int n_threads,
                    gemm_isa isa);

// For the profiler: a float GEMM node's family name, operation count and the peak it is measured
// against ("amx_bf16" where the BF16 tiles run it, "bf16" where vdpbf16ps does, else "f32"), or false for other nodes.
bool float_gemm_node_info(const ggml_tensor * t, const char ** family, double * ops, const char ** peak);

}  // namespace autoglm
