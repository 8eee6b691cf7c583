// A prompt-processing GEMM for Q4_K weights (the bulk of a Q4_K_M file) against int8-quantized
// activations (issue #15), AVX2 and AVX-512 VNNI, reached through gemm.h. It reads ggml's repacked layout (CPU_REPACK)
// or the GGUF's. Checked against exact integer arithmetic and against ggml's kernel
// (tests/test_gemm_q4_k.py).
//
// Q4_K: super-blocks of 256 weights w = d * sc[j] * q - dmin * m[j] (q in 0..15; 8 sub-blocks j of 32
// with 6-bit sc[j], m[j]; d, dmin F16). Activations are quantized per 256 as ggml's Q8_K (q = round(x *
// -127 / x_maxabs), d = 1 / that scale, in F32), so the integer sums are ggml's:
//   C[r][n] = sum_b da[r][b] * (d[n][b] * sum_j sc[n][b][j] * sum_{k in j} qa * qw
//                               - dmin[n][b] * sum_j m[n][b][j] * sum_{k in j} qa).
//
// The panel scheme is gemm_q4_0.h's: 8 weight columns unpacked once into unsigned nibbles (one 32-byte
// vector = 4 consecutive k of each column), reused for every row; the 8 vpmaddubsw of a sub-block are
// summed in 16 bits (|sum| <= 8 x 2 x 15 x 127 < 2^15, exact), and the widening vpmaddwd multiplies by
// the sub-block scales on the way (sc in place of ones), so a super-block needs one int32 -> F32
// conversion per row. The mins term is four vpmaddwd of the mins against the row's sub-block sums.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gemm_panel.h"

namespace autoglm {

constexpr int q4_k_block = 256;           // elements per Q4_K super-block
constexpr size_t q4_k_block_bytes = 144;  // d, dmin (F16), 12 bytes of 6-bit scales and mins, 128 of nibbles

// The kernel, for the dispatcher (gemm.h: the graph, tests and benchmarks use it through there).
const gemm::kernel & gemm_q4_k_kernel();

// Bytes per quantized activation row of K elements: K int8, K/256 F32 scales, K/32 int16 sums.
constexpr size_t q8_k_row_bytes(int64_t k) { return (size_t) k + (size_t) (k / q4_k_block) * 4 + (size_t) (k / 32) * 2; }

}  // namespace autoglm
