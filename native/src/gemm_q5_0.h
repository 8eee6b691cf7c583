// A prompt-processing GEMM for Q5_0 weights (the ffn_down fallback of Q4_K_M files whose FFN width is
// not a multiple of 256, as AutoGLM-Phone-9B's 13,696) against Q8_0 activations (issue #15), AVX2 and AVX-512 VNNI,
// reached through gemm.h. u = w + 16 in 0..31 (the 5th bit from qh), so 4 quads fit in 16 bits
// before widening (gemm_block32.h). ggml does not repack Q5_0 on x86: the GGUF layout is read.
// Checked against exact integer arithmetic (tests/test_gemm_block32.py).
#pragma once

#include "gemm_panel.h"

namespace autoglm {

// The kernel, for the dispatcher (gemm.h).
const gemm::kernel & gemm_q5_0_kernel();

}  // namespace autoglm
