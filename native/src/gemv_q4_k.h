// Our decode matrix-vector product for Q4_K weights (the bulk of a Q4_K_M file) in ggml's repacked
// layout (issue #15): one token's activations, quantized per 256 as ggml's Q8_K, times every weight
// column, in an AVX-512 VNNI and an AVX2 variant (the best the CPU and the OS allow: gemm.h).
//
// Bandwidth-bound like gemv_q4_0.h and built the same way: each thread reads its contiguous 8-column
// panels as one stream with software prefetch into L2 and L1, and the arithmetic stays well below the
// stream's pace. Per sub-block of 32 the column sums fit in 16 bits (16 products of <= 15 x 127 per
// 32-bit lane on VNNI, 8 per 16-bit lane on AVX2), so one vpmaddwd applies the two sub-block scales of
// a pair at once; the mins' share is one vpmaddwd of the mins against the activations' sub-block sums.
// Each column is the same F32 chain as our prompt GEMM's (gemm_q4_k.cpp, itself ggml's GEMM's): per
// pair of sub-blocks, acc = fma(exact int sum, d * da, acc) and the same for the mins, subtracted at
// the end. A token's outputs are the same bits decoded alone or in a prompt's micro-batch.
// (ggml's own matrix-vector kernel sums a whole super-block before its fma, so decoded logits differ
// from ggml's in the last bits; tests/test_gemv_q4_k.py bounds them.)
#pragma once

#include <cstdint>

#include "ggml.h"

namespace autoglm {

// Whether ggml_mul_mat(w, x) should run as gemv_q4_k_mul_mat: w a 2-D Q4_K weight in ggml's repacked
// CPU buffer (CPU_REPACK), x one F32 row with contiguous elements, an AVX2 CPU, and AUTOGLM_GEMM not
// "ggml".
bool gemv_q4_k_applies(const ggml_tensor * w, const ggml_tensor * x);

// ggml_mul_mat(w, x) as one custom op on ggml's CPU threads (gemv_q4_0_mul_mat's scheme).
ggml_tensor * gemv_q4_k_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x);

// ggml's repacked layout of Q4_K on x86 (block_q4_Kx8), from the GGUF layout (n rows of k/256
// blocks; n a multiple of 8): per 8 rows and super-block, the 8 F16 d, the 8 F16 dmin, per sub-block
// j 12 bytes holding the 8 rows' (scale, min) of j in Q4_K's 6-bit packing (the row in the place of
// the sub-block), then the rows' 128 nibble bytes in chunks of 8 (bytes 8i .. 8i+7 of rows 0..7 for
// i = 0..15). For tests and benchmarks.
// ref: ggml-cpu repack.cpp make_block_q4_Kx8
void repack_q4_kx8(const uint8_t * gguf, int64_t n, int64_t k, uint8_t * out);

// y[n] = w x for w in the repacked layout (n rows of K, n a multiple of 8, K of 256), on n_threads
// threads, with the kernel of `isa` (a gemm_isa_name; empty: the best). Throws
// autoglm::invalid_argument for bad shapes or an ISA this machine lacks, autoglm::error on a CPU
// without AVX2.
void gemv_q4_k_run(const uint8_t * w_repacked, int64_t n, int64_t k, const float * x, float * y, int n_threads,
                   const char * isa = "");

// For the profiler: our GEMV node's family name, operation count and weight bytes read, or false.
bool gemv_q4_k_node_info(const ggml_tensor * t, const char ** family, double * ops, double * bytes);

}  // namespace autoglm
