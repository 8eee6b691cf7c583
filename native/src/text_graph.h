// The GLM-4 decoder forward graph for one micro-batch appended to the KV cache.
// ref: transformers Glm4vTextModel.forward / Glm4vTextDecoderLayer (spec A.1, A.3).
#pragma once

#include <cstdint>

#include "cpu_attention.h"
#include "kv_cache.h"
#include "text_model.h"

namespace autoglm {

struct text_graph {
    ggml_cgraph * gf = nullptr;
    ggml_tensor * inp_tokens = nullptr;  // I32 [n_tokens]            (token input)
    ggml_tensor * inp_embd = nullptr;    // F32 [n_embd, n_tokens]    (embedding input, e.g. image tokens)
    ggml_tensor * inp_pos = nullptr;     // I32 [4*n_tokens]: streams t,h,w,0 (M-RoPE) or [n_tokens] (1-D)
    ggml_tensor * inp_mask = nullptr;    // F32 (F16 with flash_attn) [n_kv, n_tokens]: 0 or -inf (causal over cells)
    ggml_tensor * inp_kv_idx = nullptr;  // I64 [n_tokens]: the cache cell each token's K/V is written to
    ggml_tensor * inp_out_ids = nullptr; // I32 [n_out]               rows whose logits are wanted (when n_out < n_tokens)
    ggml_tensor * logits = nullptr;      // F32 [n_vocab, n_out]
};

// Everything the graph's structure depends on. Where the tokens go in the cache (inp_kv_idx) and
// which cells they see (inp_mask) are inputs, so one graph serves every decode step whose padded
// n_kv is the same: the session reuses it instead of rebuilding and re-allocating.
struct text_graph_shape {
    uint32_t n_tokens = 0;  // tokens in this micro-batch
    uint32_t n_kv = 0;      // cache cells attended over (>= cells in use + n_tokens; the mask hides the rest)
    uint32_t n_out = 0;     // how many of them need logits (0: none, the graph stops after the cache writes)
    bool embd_input = false;
    bool flash_attn = false;  // fused attention (ggml_flash_attn_ext); mask becomes F16
    // With flash_attn: our CPU kernel (cpu_attention.h) for micro-batches of >= 32 tokens on layers
    // whose cache is in host memory; none: always ggml's.
    attn_kernel cpu_attn = attn_kernel::none;
    // cpu_attn was chosen by "auto": a layer whose query matrix runs on the BF16 tiles (gemm.h,
    // gemm_uses_bf16_tiles: quantized weights, AMX, a batch past the crossover) attends in BF16 too
    // (cpu_attention_bf16), as that batch's arithmetic is BF16 already; else cpu_attn.
    bool attn_auto = true;
    // Our prompt GEMMs where they apply (gemm.h); off while an importance matrix is collected,
    // whose callback reads the activations of ggml's MUL_MAT nodes.
    bool own_gemm = true;

    bool operator==(const text_graph_shape & o) const {
        return n_tokens == o.n_tokens && n_kv == o.n_kv && n_out == o.n_out && embd_input == o.embd_input &&
               flash_attn == o.flash_attn && cpu_attn == o.cpu_attn && attn_auto == o.attn_auto && own_gemm == o.own_gemm;
    }
};

// Builds into `ctx` (a no_alloc context sized with graph_ctx_size()).
text_graph build_text_graph(ggml_context * ctx, const text_model & model, const kv_cache & kv, const text_graph_shape & s);
size_t graph_max_nodes(const text_model & model);
size_t graph_ctx_size(const text_model & model);

}  // namespace autoglm
