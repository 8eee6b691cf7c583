// A prompt-processing GEMM for Q4_0 weights against int8-quantized activations (issue #15), AVX2 and AVX-512 VNNI,
// reached through gemm.h. It reads ggml's repacked layout (CPU_REPACK) or the GGUF's. Checked against
// exact integer arithmetic and against ggml's kernel (tests/test_gemm_q4_0.py), timed by
// bench/bench_gemm.py.
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

#include "gemm_panel.h"

namespace autoglm {

constexpr int q4_0_block = 32;          // elements per Q4_0 block
constexpr size_t q4_0_block_bytes = 18;  // F16 scale + 16 bytes of nibbles

// The kernel, for the dispatcher (gemm.h: the graph, tests and benchmarks use it through there).
const gemm::kernel & gemm_q4_0_kernel();

}  // namespace autoglm
