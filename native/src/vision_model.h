// The GLM-4V vision tower of an mmproj GGUF (arch "clip", projector "glm4v"): ViT + 2x2 downsample
// + merger, producing one text-width embedding per merged 2x2 patch window.
// ref: transformers Glm4vVisionModel.forward (spec section B).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend.h"
#include "cpu_attention.h"
#include "eval_chain.h"
#include "ggml_ptr.h"
#include "gguf_file.h"
#include "image.h"
#include "op_profile.h"
#include "tensor_dump.h"
#include "weight_store.h"

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

struct vision_params {
    int n_threads = 0;
    bool use_gpu = true;  // encode on the GPU when ggml has one (mmproj_offload)
    std::string attention = "auto";  // CPU attention kernel: auto, ggml, avx2, avx512, avx512_bf16 (cpu_attention.h)
    // The type the ViT's and merger's matrices are held in: "file" (as stored), "f32", "f16", "bf16",
    // or "auto": bf16 where the CPU has AVX512_BF16 for our GEMM or ggml's, and the tower runs on the CPU (the
    // production deployments of this model run the ViT in bf16), else as stored. Sums stay F32; the
    // activations are rounded to BF16 inside BF16 matmuls, and a BF16 tower's attention ("auto") is
    // BF16 too where the CPU has AVX512_BF16 and its vdpbf16ps outruns its F32 FMAs (cpu_attention_bf16).
    std::string matmul_type = "file";
};

class vision_model {
public:
    vision_model(const std::string & mmproj_path, const vision_params & params);
    ~vision_model();
    vision_model(const vision_model &) = delete;
    vision_model & operator=(const vision_model &) = delete;
    const vision_hparams & hparams() const { return hp_; }
    std::string devices() const;   // e.g. "CPU (8 threads)"
    std::string weights_device() const;  // where the tower's weights are, read off their buffers ("CPU", "Vulkan0")
    size_t weight_bytes() const;   // backend memory held by the weights
    std::string attention_kernel() const;  // "ggml", "avx2", "avx512" or "avx512_bf16"
    std::string matmul_type() const;       // the matrices' type after the matmul_type choice ("f16", "bf16", ...)
    resize_params resize(int64_t min_pixels = 0, int64_t max_pixels = 0) const;  // 0: the file's values

    // Patches (from preprocess) -> embeddings [n_tokens, n_out] row-major, n_tokens = grid_h*grid_w/4,
    // rows in raster order of the merged (grid_h/2) x (grid_w/2) grid. Throws invalid_argument for
    // patches whose shape does not fit the model. Calls on one model are serialized (one scheduler).
    std::vector<float> encode(const pixel_patches & patches);
    // Compute memory (bytes, all backends) that encoding a grid_h x grid_w-patch image needs, without
    // running it: plan memory before accepting a large image.
    size_t compute_bytes(int32_t grid_h, int32_t grid_w);

    const vision_weights & weights() const { return w_; }

private:
    // Loading, in order: the file's hyperparameters, the widths its tensors give, the devices and the
    // matrices' type, the tensors (shapes checked), the weights derived from them (the Conv3d's two
    // time slices summed), then the scheduler.
    void read_hparams(const gguf_file & f);
    void read_widths(const gguf_file & f);
    void init_backends(const vision_params & params);
    void create_tensors(const gguf_file & f);
    void derive_weights(const gguf_file & f);
    void init_scheduler();
    void install_observers();  // AUTOGLM_DUMP_TENSORS, AUTOGLM_PROFILE

    std::string path_;
    vision_hparams hp_;
    vision_weights w_;
    std::unique_ptr<backend_set> backends_;
    std::unique_ptr<weight_store> store_;
    size_t weight_bytes_ = 0;
    ggml_sched_ptr sched_;
    std::vector<uint8_t> graph_buf_;           // metadata arena for graph building (no tensor data)
    std::mutex mu_;                            // one encode at a time: the scheduler and its buffers are shared
    attn_kernel attn_ = attn_kernel::none;     // a GPU-resident tower uses ggml's fused attention
    ggml_type matmul_type_ = GGML_TYPE_COUNT;  // the matrices' type when converted at load, else COUNT
    op_profile profile_;
    tensor_dump dump_;
    eval_chain eval_chain_;
};

}  // namespace autoglm
