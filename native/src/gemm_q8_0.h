// A prompt-processing GEMM for Q8_0 weights (Q8_0 files, and the ffn_down of Q4_K_M files on the
// layers where llama-quantize gives more bits) against Q8_0 activations (issue #15), AVX2 and AVX-512 VNNI, reached
// through gemm.h. u = w + 128 does not fit vpmaddubsw's 16-bit pair sums, so it is split into two
// 4-bit planes, u = 16 * hi + lo (gemm_block32.h). ggml does not repack Q8_0 on x86: the GGUF layout
// is read. Checked against exact integer arithmetic (tests/test_gemm_block32.py).
#pragma once

#include "gemm_panel.h"

namespace autoglm {

// The kernel, for the dispatcher (gemm.h).
const gemm::kernel & gemm_q8_0_kernel();

}  // namespace autoglm
