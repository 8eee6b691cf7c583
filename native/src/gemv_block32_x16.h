// Our decode matrix-vector product for Q5_0, Q5_1 and Q4_1 weights held in the interleaved layout of
// block32_x16.h (issue #15), against one token's activations quantized as ggml's Q8_0.
//
// One 32-bit lane per row: per record (16 rows' block), four chunks of 4 bytes per row, each split
// into its low and high nibbles (+16 where the chunk's mask says so) and multiplied against the 4
// activation bytes it meets, broadcast: 8 vpdpbusd give the 16 rows' exact block sums (started from the
// offset's share), then one conversion and the F32 step acc = fma(sum, dw * da, acc) (+ m x (da x
// sum(q)) for the affine types): the same integers and F32 steps as gemv_block32.h on the GGUF layout,
// so the same bits. AVX2: two halves of 8 rows, vpmaddubsw + vpmaddwd, the masks widened to bytes.
// The records are one linear stream per thread, prefetched ahead.
#pragma once

#include <cstdint>

#include "ggml.h"

namespace autoglm {

// Batches of up to this many rows take the GEMV once per row rather than the GEMM (gemm.h): on 2 cores
// one 4096 x 13,696 Q5_1 product took 1.8 ms per row as GEMVs against 6-6.6 ms for the GEMM at 2-8 rows
// (bench/README.md, "Q5_0, Q5_1 and Q4_1 in our interleaved layout").
constexpr int x16_gemv_max_rows = 6;

// Whether ggml_mul_mat(w, x) can run as x16_gemv_mul_mat: w marked as interleaved (block32_x16.h) and x
// 1 to x16_gemv_max_rows contiguous F32 rows.
bool x16_gemv_applies(const ggml_tensor * w, const ggml_tensor * x);

// ggml_mul_mat(w, x) as one custom op; each thread quantizes each row and multiplies whole groups of 16
// weight rows by it: a row gets the bits it would get alone (a decode step's).
ggml_tensor * x16_gemv_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x);

// y[m][n] = x[m] w^T for w n rows of K `type` elements in the interleaved layout (x16_repack), one pass
// over w per row of x (as the graph's node), on n_threads threads, with the kernel of `isa` (a
// gemm_isa_name; empty: the best). Throws autoglm::invalid_argument for another type, bad shapes or an
// ISA this machine lacks, autoglm::error on a CPU without AVX2.
void x16_gemv_run(ggml_type type, const uint8_t * w, int64_t n, int64_t k, const float * x, int64_t m, float * y, int n_threads,
                  const char * isa = "");

// For the profiler: our node's family name, operation count and weight bytes read, or false.
bool x16_gemv_node_info(const ggml_tensor * t, const char ** family, double * ops, double * bytes);

}  // namespace autoglm
