// A prompt-processing GEMM for Q5_K weights (the bulk of a Q5_K_M file) against int8-quantized
// activations (issue #15), AVX2 and AVX-512 VNNI, reached through gemm.h. ggml does not repack Q5_K on
// x86, so it reads the GGUF layout. Checked against exact integer arithmetic and against ggml's kernel
// (tests/test_gemm_q5_k.py).
//
// Q5_K: super-blocks of 256 weights w = d * sc[j] * q - dmin * m[j] (q in 0..31: 4 bits in qs, the 5th
// in qh; 8 sub-blocks j of 32 with 6-bit sc[j], m[j] packed as Q4_K's; d, dmin F16). Activations are
// ggml's Q8_K (gemm_q8k_act.h). Per row, column and super-block the sums are exact integers,
//   isum = sum_j sc[j] * sum_{k in j} qa * qw,   msum = sum_j m[j] * sum_{k in j} qa,
// and the F32 steps are acc += cvt(isum) * (d * da), acc_min += cvt(msum) * (dmin * da), C = acc -
// acc_min: one conversion per super-block (ggml's kernel keeps 8 partial sums per row, so the results
// differ from ggml's in rounding). The decode GEMV (gemv_q5_k.h) takes the same steps: a token gets the
// same bits decoded or in a prompt.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gemm_panel.h"

namespace autoglm {

constexpr int q5_k_block = 256;           // elements per Q5_K super-block
constexpr size_t q5_k_block_bytes = 176;  // d, dmin (F16), 12 bytes of scales and mins, qh[32], qs[128]
constexpr size_t q5_k_scales_at = 4, q5_k_qh_at = 16, q5_k_qs_at = 48;  // in a block (ggml's block_q5_K)

// The kernel, for the dispatcher (gemm.h: the graph, tests and benchmarks use it through there).
const gemm::kernel & gemm_q5_k_kernel();

}  // namespace autoglm
