// A prompt-processing GEMM for Q6_K weights (a Q6_K file's matrices, half of a K-quant mix's attn_v)
// against int8-quantized activations (issue #15), AVX2 and AVX-512 VNNI, reached through gemm.h. ggml
// does not repack Q6_K on x86, so it reads the GGUF layout.
//
// Q6_K: super-blocks of 256 weights w = d * sc[j] * (u - 32) (u in 0..63; 16 sub-blocks j of 16 with
// int8 sc[j]; d F16). Activations are ggml's Q8_K values (gemm_q8k_act.h), plus per 8 of them
// s8 = -32 x their sum. The int8 scales multiply 16-bit partial sums:
// - VNNI: two vpdpbusd of u x q, started from s8, sum 8 products of q (u - 32), |.| <= 8 x 127 x 32,
//   within int16; the two halves of a sub-block are packed as int16 pairs, and one vpdpwssd by (sc, sc)
//   adds sc x the sub-block's sum into int32.
// - AVX2: two vpmaddubsw of u x q summed in 16 bits (4 x 63 x 127 < 2^15), vpmaddwd by (sc, sc), and
//   the offset as sc x (s8 + s8') through one more vpmaddwd.
// Each super-block's sum is then an exact int32 (|.| <= 256 x 127 x 32 x 128), and the F32 step acc +=
// cvt(sum) * (d * da) is the decode GEMV's (gemv_q6_k.h): a token gets the same bits either way.
#pragma once

#include <cstddef>

#include "gemm_panel.h"

namespace autoglm {

// ggml's block_q6_K, which the GEMM and the GEMV (gemv_q6_k.h) read as stored
constexpr int q6_k_block = 256;           // elements per super-block: 16 sub-blocks of 16, one int8 scale each
constexpr size_t q6_k_block_bytes = 210;  // ql[128] low 4 bits, qh[64] high 2 bits, scales[16] int8, d F16
constexpr size_t q6_k_qh_at = 128, q6_k_scales_at = 192, q6_k_d_at = 208;

// The kernel, for the dispatcher (gemm.h).
const gemm::kernel & gemm_q6_k_kernel();

}  // namespace autoglm
