// The GLM-4V vision tower of an mmproj GGUF (arch "clip", projector "glm4v"): ViT + 2x2 downsample
// + merger, producing one text-width embedding per merged 2x2 patch window.
// ref: transformers Glm4vVisionModel.forward (spec section B).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "ggml_ptr.h"
#include "image.h"

namespace autoglm {

struct vision_hparams {
    uint32_t n_embd = 0;        // clip.vision.embedding_length (1536)
    uint32_t n_layer = 0;       // clip.vision.block_count
    uint32_t n_head = 0;        // clip.vision.attention.head_count
    uint32_t n_ff = 0;          // ViT MLP width, from v.blk.0.ffn_up shape (= out_hidden_size)
    uint32_t n_merger_ff = 0;   // merger SwiGLU width, from mm.up shape
    uint32_t n_out = 0;         // output width = text n_embd (mm.down rows)
    uint32_t patch_size = 14;
    uint32_t merge_size = 2;    // autoglm.vision.spatial_merge_size, else 2 (llama.cpp's fixed value)
    uint32_t n_pos = 0;         // position-embedding table entries (a square grid: side = sqrt(n_pos))
    float eps = 1e-5f;          // RMSNorm eps; the merger LayerNorm uses 1e-5 (as HF)
    float rope_theta = 10000.0f;  // ViT 2-D RoPE base (HF and llama.cpp hard-code 10000)
    std::array<float, 3> mean{}, std{};
    int64_t min_pixels = 12544, max_pixels = 9633792;  // autoglm.image_*_pixels, else HF's GLM-4.1V values
};

struct vision_params {
    int n_threads = 0;
    bool use_gpu = true;  // encode on the GPU when ggml has one (mmproj_offload)
    std::string attention = "auto";  // CPU attention kernel: auto, ggml, avx2, avx512 (cpu_attention.h)
    // The type the ViT's and merger's matrices are held in: "file" (as stored), "f32", "f16", "bf16",
    // or "auto": bf16 where the CPU kernels in use have AVX512_BF16 and the tower runs on the CPU (the
    // production deployments of this model run the ViT in bf16), else as stored. Activations and
    // accumulation stay F32; ggml rounds the activations to the weights' type inside each matmul.
    std::string matmul_type = "file";
};

class vision_model {
public:
    vision_model(const std::string & mmproj_path, const vision_params & params);
    ~vision_model();
    vision_model(const vision_model &) = delete;
    vision_model & operator=(const vision_model &) = delete;
    const vision_hparams & hparams() const;
    std::string devices() const;   // e.g. "CPU (8 threads)"
    std::string weights_device() const;  // where the tower's weights are, read off their buffers ("CPU", "Vulkan0")
    size_t weight_bytes() const;   // backend memory held by the weights
    std::string attention_kernel() const;  // "ggml", "avx2" or "avx512"
    std::string matmul_type() const;       // the matrices' type after the matmul_type choice ("f16", "bf16", ...)
    resize_params resize(int64_t min_pixels = 0, int64_t max_pixels = 0) const;  // 0: the file's values

    // Patches (from preprocess) -> embeddings [n_tokens, n_out] row-major, n_tokens = grid_h*grid_w/4,
    // rows in raster order of the merged (grid_h/2) x (grid_w/2) grid. Throws invalid_argument for
    // patches whose shape does not fit the model. Calls on one model are serialized (one scheduler).
    std::vector<float> encode(const pixel_patches & patches);
    // Compute memory (bytes, all backends) that encoding a grid_h x grid_w-patch image needs, without
    // running it: plan memory before accepting a large image.
    size_t compute_bytes(int32_t grid_h, int32_t grid_w);

private:
    struct impl;
    std::unique_ptr<impl> p_;
};

}  // namespace autoglm
