// The GLM-4V vision tower's forward graph for one image (one frame); the weights are in vision_model.h.
// ref: transformers Glm4vVisionModel.forward (spec B.2-B.4).
#pragma once

#include <cstdint>
#include <vector>

#include "cpu_attention.h"
#include "ggml.h"
#include "vision_model.h"

namespace autoglm {

struct vision_graph {
    ggml_cgraph * gf = nullptr;
    ggml_tensor * inp_patches = nullptr;  // F32 [3*p*p, n_patches]  patches in merge-window order
    ggml_tensor * inp_pos = nullptr;      // I32 [4*n_patches]       RoPE streams: row, col, row, col
    ggml_tensor * inp_raster = nullptr;   // I32 [n_patches]         raster index (row*grid_w + col) of each patch;
                                          //                         nullptr when there is no position table
    ggml_tensor * out = nullptr;          // F32 [n_out, n_tokens]   merged tokens in raster order
};

// Per patch i (merge-window order, spec C.3): its (row, col) in the patch grid.
void merge_window_coords(int32_t grid_h, int32_t grid_w, int32_t merge, std::vector<int32_t> & rows, std::vector<int32_t> & cols);

// attn: the CPU attention kernel to use (cpu_attention.h), or none for ggml_flash_attn_ext (any
// backend; what a GPU-resident tower uses). own_gemm: the matrices run as our float GEMM
// (gemm_float.h) where it applies; false keeps ggml's matmul (a GPU-resident tower).
vision_graph build_vision_graph(ggml_context * ctx, const vision_hparams & hp, const vision_weights & w, int32_t grid_h,
                                int32_t grid_w, attn_kernel attn, bool own_gemm);
size_t vision_graph_max_nodes(const vision_hparams & hp);
size_t vision_graph_ctx_size(const vision_hparams & hp);

}  // namespace autoglm
