// A prompt-processing GEMM for Q4_0 weights against int8-quantized activations (issue #15), AVX2.
// The decoder graph uses it for micro-batches of >= 32 rows (text_graph.cpp); decode keeps ggml's
// repacked matrix-vector kernel, whose weight layout this GEMM reads. Checked against exact integer
// arithmetic and against ggml's kernel (tests/test_gemm_q4_0.py), timed by bench/bench_gemm.py.
//
// C[m][n] = sum_b da[m][b] * dw[n][b] * sum_{k in b} q[m][k] * (w[n][k] - 8), the arithmetic of ggml's
// Q4_0 x Q8_0 dot product (activation scales rounded to F16 as ggml does), summed in F32.
//
// Why it can be faster than ggml's kernel: a panel of 8 weight columns is unpacked once into unsigned
// bytes, interleaved so that one 32-byte vector holds 4 consecutive k of each of the 8 columns, and
// then reused for every row of the micro-batch (ggml unpacks per 4 rows). Each vpmaddubsw (weights
// as the unsigned operand, 4 activation bytes broadcast) makes 8 columns x 2 pairs; the 8 quads of a
// block are summed in 16 bits (|sum| <= 8 x 2 x 15 x 127 < 2^15, exact) and widened once per block,
// where the straightforward kernel spends one vpmaddwd per vpmaddubsw. The -8 of Q4_0 becomes one
// subtraction of 8 x sum(q) per row and block.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ggml.h"

namespace autoglm {

constexpr int q4_0_block = 32;          // elements per Q4_0 block
constexpr size_t q4_0_block_bytes = 18;  // F16 scale + 16 bytes of nibbles

// True when this CPU can run the kernel (AVX2 + FMA + F16C).
bool gemm_q4_0_available();

// w: N rows of K/32 Q4_0 blocks (the GGUF layout); a: M x K row-major F32; c: M x N row-major F32.
// K must be a multiple of 32. n_threads threads split the columns. Throws autoglm::error when the CPU
// lacks AVX2.
void gemm_q4_0(const uint8_t * w, int64_t n, int64_t k, const float * a, int64_t m, float * c, int n_threads);

// In a graph: whether ggml_mul_mat(w, x) over n_rows rows should run as gemm_q4_0_mul_mat. Q4_0 weights
// held on the CPU, in the GGUF layout or in ggml's repacked one (CPU_REPACK); at least 32 rows; an
// AVX2 CPU; and AUTOGLM_GEMM not set to "ggml" (which keeps ggml's kernel, for comparisons).
bool gemm_q4_0_applies(const ggml_tensor * w, int64_t n_rows);
// ggml_mul_mat(w, x) as two custom ops on ggml's CPU threads: the rows of x (F32 [K, M], contiguous
// rows) quantized, then the panels. w reaches the op through its user data, not as a source: ggml's
// repacked buffer type would refuse any op but its own matmul.
ggml_tensor * gemm_q4_0_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x);
inline constexpr const char * gemm_q4_0_name = "gemm_q4_0";                    // the GEMM node's name
inline constexpr const char * gemm_q4_0_quantize_name = "gemm_q4_0_quantize";  // the row quantizer's

}  // namespace autoglm
