// Multi-head attention on the CPU as a ggml custom op: the vision tower's full (bidirectional)
// attention, and the decoder's causal, grouped-query attention when it processes a prompt.
//
// Why not ggml_flash_attn_ext: a phone screenshot is ~12,400 patches, so attention is ~60% of the
// tower's FLOPs. ggml's CPU flash-attention kernel re-packs every K tile for every Q tile and runs at
// about 40% of the matmuls' throughput on it (measured: AUTOGLM_PROFILE=1). This kernel packs K (as
// K^T) and V once per layer into panels one register block wide (two ops ahead of the attention's),
// so both products are plain register-blocked GEMMs over contiguous panels, with an online softmax in
// between (the N x N scores are never stored). F32 throughout, like the rest of the tower.
//
// For the decoder's prompt processing the same holds at long contexts: with an F16 cache, K and V are
// converted to F32 and packed once per layer (ggml's kernel converts them per tile) and the mask's
// causal tail is skipped. Decoding one token keeps ggml's kernel (its split-K path suits a single query).
//
// x86-64 with AVX2+FMA+F16C or AVX-512 (chosen at run time) under GCC; elsewhere cpu_attention_kernel()
// returns none and the graphs use ggml_flash_attn_ext. AUTOGLM_CPU_ATTN=ggml|avx2|avx512|avx512_bf16 forces a
// path (tests and comparisons), as does vision_params::attention.
#pragma once

#include <string>

#include "ggml.h"

namespace autoglm {

// avx512_bf16: attention in BF16 (cpu_attention_bf16); never chosen by "auto", which keeps F32: the
// vision model picks it with its matrices in BF16 (vision_model.h), the decoder for a prompt whose
// matrices run on the BF16 tiles (text_graph.cpp).
enum class attn_kernel { none, avx2, avx512, avx512_bf16 };

// The kernel for `request`: "auto" (or empty: AUTOGLM_CPU_ATTN, else the best F32 kernel this CPU has),
// "ggml" (none: ggml_flash_attn_ext), "avx2", "avx512", "avx512_bf16". Throws invalid_argument for an
// unknown name or a kernel this CPU or build lacks.
attn_kernel cpu_attention_kernel(const std::string & request);
bool cpu_attention_is_auto(const std::string & request);  // whether `request` leaves the choice to us
bool cpu_attention_has(attn_kernel kernel);     // whether this CPU (and build) runs it
const char * attn_kernel_name(attn_kernel kernel);  // "ggml", "avx2", "avx512", "avx512_bf16"

// q: F32 [head_dim, n_head, n], k and v: F32 [head_dim, n_head_kv, n_kv], all with contiguous rows (any
// strides), n_head a multiple of n_head_kv (grouped-query attention); mask: null, or F16 [n_kv, >= n]
// of 0 / -inf. Returns softmax(q k^T / sqrt(head_dim) + mask) v as F32 [head_dim, n_head, n], after two
// ops that pack K and V into the kernel's panels; avx512_bf16 is cpu_attention_bf16. CPU backend only.
ggml_tensor * cpu_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * mask,
                            attn_kernel kernel);
inline constexpr const char * cpu_attention_name = "cpu_attention";  // the op's node name

// Attention with q, k, v and the softmax's weights rounded to BF16 and the products summed in F32 (by
// the tiles or vdpbf16ps), as a bf16 model computes it (vLLM's and SGLang's flash attention): the
// vision tower's (no mask), and the decoder's prompt (causal mask, as cpu_attention's) where its
// matrices are on the BF16 tiles anyway. q: F32 [hd, n_head, n]; k, v: F32 [hd, n_head_kv, n_kv], rows
// contiguous (any strides). K and V are packed into BF16 pairs once (two ops), then one op attends.
// Needs cpu_attention_has(avx512_bf16).
ggml_tensor * cpu_attention_bf16(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v,
                                 ggml_tensor * mask = nullptr);
// Whether cpu_attention_bf16's products run on the AMX-BF16 tiles (where our GEMMs use them:
// gemm_isa amx), else by vdpbf16ps.
bool cpu_attention_bf16_tiles();
inline constexpr const char * cpu_attention_bf16_name = "cpu_attention_bf16";

}  // namespace autoglm
