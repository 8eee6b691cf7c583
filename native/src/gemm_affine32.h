// Prompt-processing GEMMs for the affine block-32 types, Q5_1 (the ffn_down fallback of Q5_K_M and
// Q5_K_S files whose FFN width is not a multiple of 256, as AutoGLM-Phone-9B's 13,696) and Q4_1,
// against Q8_0 activations (issue #15), AVX2 and AVX-512 VNNI, reached through gemm.h. A weight is
// w = dw * u + mw with u unsigned (0..31 or 0..15), so each block adds mw x (da x sum(q)) to the
// integer dot product's share (gemm_block32.h). ggml repacks neither on x86: the GGUF layout is read.
// Checked against exact integer arithmetic (tests/test_gemm_affine32.py).
#pragma once

#include "gemm_panel.h"

namespace autoglm {

// The kernels, for the dispatcher (gemm.h).
const gemm::kernel & gemm_q5_1_kernel();
const gemm::kernel & gemm_q4_1_kernel();

}  // namespace autoglm
