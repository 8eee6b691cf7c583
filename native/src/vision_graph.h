// The GLM-4V vision tower's weights and its forward graph for one image (one frame).
// ref: transformers Glm4vVisionModel.forward (spec B.2-B.4).
#pragma once

#include <cstdint>
#include <vector>

#include "ggml.h"
#include "cpu_attention.h"
#include "vision_model.h"

namespace autoglm {

struct vision_layer {
    ggml_tensor * ln1 = nullptr;       // [n_embd]              norm1 (RMSNorm)
    ggml_tensor * qkv = nullptr;       // [n_embd, 3*n_embd]    rows: q (heads x head_dim), k, v
    ggml_tensor * qkv_b = nullptr;     // [3*n_embd]            optional (attention_bias)
    ggml_tensor * out = nullptr;       // [n_embd, n_embd]      attn.proj
    ggml_tensor * out_b = nullptr;     // optional
    ggml_tensor * ln2 = nullptr;       // [n_embd]              norm2 (RMSNorm)
    ggml_tensor * ffn_gate = nullptr;  // [n_embd, n_ff]
    ggml_tensor * ffn_gate_b = nullptr;
    ggml_tensor * ffn_up = nullptr;    // [n_embd, n_ff]
    ggml_tensor * ffn_up_b = nullptr;
    ggml_tensor * ffn_down = nullptr;  // [n_ff, n_embd]
    ggml_tensor * ffn_down_b = nullptr;
};

struct vision_weights {
    // Conv3d over a still image (both time slices equal) = (W_t0 + W_t1) . patch: the two GGUF kernels
    // [p, p, 3, n_embd] summed at load into one F32 matrix whose rows are (C, py, px)-flattened.
    ggml_tensor * patch_w = nullptr;    // F32 [3*p*p, n_embd]
    ggml_tensor * patch_b = nullptr;    // [n_embd]
    ggml_tensor * norm_embd = nullptr;  // [n_embd]          post_conv_layernorm (optional in the file)
    ggml_tensor * pos_embd = nullptr;   // [n_embd, n_pos]   row-major side x side grid (optional)
    std::vector<vision_layer> layers;
    ggml_tensor * post_ln = nullptr;    // [n_embd]
    ggml_tensor * merge_w = nullptr;    // [m, m, n_embd, n_out]  downsample Conv2d, HF [out, in, kh, kw]
    ggml_tensor * merge_b = nullptr;    // [n_out]
    ggml_tensor * fc = nullptr;         // [n_out, n_out]    merger.proj
    ggml_tensor * fc_b = nullptr;       // optional
    ggml_tensor * post_norm = nullptr;  // [n_out]           LayerNorm weight
    ggml_tensor * post_norm_b = nullptr;
    ggml_tensor * gate = nullptr;       // [n_out, n_merger_ff]
    ggml_tensor * gate_b = nullptr;
    ggml_tensor * up = nullptr;         // [n_out, n_merger_ff]
    ggml_tensor * up_b = nullptr;
    ggml_tensor * down = nullptr;       // [n_merger_ff, n_out]
    ggml_tensor * down_b = nullptr;
};

struct vision_graph {
    ggml_cgraph * gf = nullptr;
    ggml_tensor * inp_patches = nullptr;  // F32 [3*p*p, n_patches]  patches in merge-window order
    ggml_tensor * inp_pos = nullptr;      // I32 [4*n_patches]       RoPE streams: row, col, row, col
    ggml_tensor * inp_raster = nullptr;   // I32 [n_patches]         raster index (row*grid_w + col) of each patch;
                                          //                         nullptr when there is no position table
    ggml_tensor * out = nullptr;          // F32 [n_out, n_tokens]   merged tokens in raster order
};

// Per patch i (merge-window order, spec C.3): its (row, col) in the patch grid.
void merge_window_coords(int32_t grid_h, int32_t grid_w, int32_t merge, std::vector<int32_t> & rows,
                         std::vector<int32_t> & cols);

// attn: the CPU attention kernel to use (cpu_attention.h), or none for ggml_flash_attn_ext (any
// backend; what a GPU-resident tower uses).
vision_graph build_vision_graph(ggml_context * ctx, const vision_hparams & hp, const vision_weights & w, int32_t grid_h,
                                int32_t grid_w, attn_kernel attn);
size_t vision_graph_max_nodes(const vision_hparams & hp);
size_t vision_graph_ctx_size(const vision_hparams & hp);

}  // namespace autoglm
