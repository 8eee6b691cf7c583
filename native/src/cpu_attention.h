// Multi-head attention on the CPU as a ggml custom op: the vision tower's full (bidirectional)
// attention, and the decoder's causal, grouped-query attention when it processes a prompt.
//
// Why not ggml_flash_attn_ext: a phone screenshot is ~12,400 patches, so attention is ~60% of the
// tower's FLOPs. ggml's CPU flash-attention kernel re-packs every K tile for every Q tile and runs at
// about 40% of the matmuls' throughput on it (measured: AUTOGLM_PROFILE=1). This kernel takes K
// already transposed once per layer (a ggml_cont in the graph), so both products are plain
// register-blocked GEMMs streaming contiguous rows, with an online softmax in between (the N x N
// scores are never stored). F32 throughout, like the rest of the tower.
//
// For the decoder's prompt processing the same holds at long contexts: with an F16 cache, K and V are
// converted to F32 once per layer (ggml's kernel converts them per tile) and the mask's causal tail is
// skipped. Decoding one token keeps ggml's kernel (its split-K path suits a single query).
//
// x86-64 with AVX2+FMA+F16C or AVX-512 (chosen at run time) under GCC; elsewhere cpu_attention_kernel()
// returns none and the graphs use ggml_flash_attn_ext. AUTOGLM_CPU_ATTN=ggml|avx2|avx512 forces a
// path (tests and comparisons), as does vision_params::attention.
#pragma once

#include <string>

#include "ggml.h"

namespace autoglm {

enum class attn_kernel { none, avx2, avx512 };

// The kernel for `request`: "auto" (or empty: AUTOGLM_CPU_ATTN, else the best this CPU has),
// "ggml" (none: ggml_flash_attn_ext), "avx2", "avx512". Throws invalid_argument for an unknown name
// or a kernel this CPU or build lacks.
attn_kernel cpu_attention_kernel(const std::string & request);

// q: F32 [head_dim, n_head, n] (contiguous rows), kt: F32 [n_kv, head_dim, n_head_kv] contiguous (K
// transposed), v: F32 [head_dim, n_head_kv, n_kv] with contiguous rows (any strides), n_head a multiple
// of n_head_kv (grouped-query attention); mask: null, or F16 [n_kv, >= n] of 0 / -inf. Returns
// softmax(q k^T / sqrt(head_dim) + mask) v as F32 [head_dim, n_head, n]. CPU backend only.
ggml_tensor * cpu_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * kt, ggml_tensor * v, ggml_tensor * mask,
                            attn_kernel kernel);
inline constexpr const char * cpu_attention_name = "cpu_attention";  // the op's node name

}  // namespace autoglm
