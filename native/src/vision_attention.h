// Full (bidirectional) multi-head attention of the vision tower on the CPU, as a ggml custom op.
//
// Why not ggml_flash_attn_ext: a phone screenshot is ~12,400 patches, so attention is ~60% of the
// tower's FLOPs. ggml's CPU flash-attention kernel re-packs every K tile for every Q tile and runs at
// about 40% of the matmuls' throughput on it (measured: AUTOGLM_PROFILE=1). This kernel takes K
// already transposed once per layer (a ggml_cont in the graph), so both products are plain
// register-blocked GEMMs streaming contiguous rows, with an online softmax in between (the N x N
// scores are never stored). F32 throughout, like the rest of the tower.
//
// x86-64 with AVX2+FMA or AVX-512 (chosen at run time) under GCC; elsewhere vision_attention_kernel()
// returns none and the graph uses ggml_flash_attn_ext. AUTOGLM_VISION_ATTN=ggml|avx2|avx512 forces a
// path (tests and comparisons), as does vision_params::attention.
#pragma once

#include <string>

#include "ggml.h"

namespace autoglm {

enum class attn_kernel { none, avx2, avx512 };

// The kernel for `request`: "auto" (or empty: AUTOGLM_VISION_ATTN, else the best this CPU has),
// "ggml" (none: ggml_flash_attn_ext), "avx2", "avx512". Throws invalid_argument for an unknown name
// or a kernel this CPU or build lacks.
attn_kernel vision_attention_kernel(const std::string & request);

// q: F32 [head_dim, n_head, n] (contiguous rows), kt: F32 [n, head_dim, n_head] contiguous (K
// transposed), v: F32 [head_dim, n_head, n] with contiguous rows (any row strides). Returns
// softmax(q k^T / sqrt(head_dim)) v as F32 [head_dim, n_head, n]. CPU backend only.
ggml_tensor * vision_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * kt, ggml_tensor * v, attn_kernel kernel);

}  // namespace autoglm
