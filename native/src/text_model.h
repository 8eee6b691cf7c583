// The GLM-4 text decoder of a GLM-4.1V / AutoGLM-Phone-9B GGUF (arch "glm4"): hyperparameters,
// weights on their devices, vocabulary arrays and chat/stop metadata.
// ref: transformers Glm4vTextModel / Glm4vForConditionalGeneration; spec sections A.1-A.4.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend.h"
#include "ggml_ptr.h"
#include "gguf_file.h"
#include "tokenizer.h"
#include "weight_store.h"

namespace autoglm {

struct text_hparams {
    uint32_t n_vocab = 0;      // token_embd rows
    uint32_t n_embd = 0;       // hidden_size
    uint32_t n_layer = 0;      // num_hidden_layers
    uint32_t n_head = 0;       // num_attention_heads
    uint32_t n_head_kv = 0;    // num_key_value_heads
    uint32_t head_dim = 0;     // n_embd / n_head (attention.key_length if present)
    uint32_t n_ff = 0;         // intermediate_size
    uint32_t n_rot = 0;        // rotary dims at the start of each head (rope.dimension_count)
    uint32_t n_ctx_train = 0;  // max_position_embeddings
    float rope_theta = 10000.0f;
    float rms_eps = 1e-5f;
    std::array<int, 4> rope_sections{0, 0, 0, 0};
    // M-RoPE files (rope.dimension_sections with s0 > 0 and s1 > 0) store Q/K in NeoX order; older
    // text-only glm4 files keep HF's interleaved order and 1-D positions (spec A.3.4).
    bool mrope = false;
};

struct text_layer {
    ggml_tensor * attn_norm = nullptr;       // [n_embd]           input_layernorm
    ggml_tensor * wq = nullptr;              // [n_embd, n_head*head_dim]
    ggml_tensor * bq = nullptr;              // [n_head*head_dim]
    ggml_tensor * wk = nullptr;              // [n_embd, n_head_kv*head_dim]
    ggml_tensor * bk = nullptr;
    ggml_tensor * wv = nullptr;
    ggml_tensor * bv = nullptr;
    ggml_tensor * wo = nullptr;              // [n_head*head_dim, n_embd]
    ggml_tensor * post_attn_norm = nullptr;  // [n_embd]           post_self_attn_layernorm
    ggml_tensor * ffn_norm = nullptr;        // [n_embd]           post_attention_layernorm (pre-MLP)
    ggml_tensor * ffn_up = nullptr;          // [n_embd, 2*n_ff]   gate rows first
    ggml_tensor * ffn_down = nullptr;        // [n_ff, n_embd]
    ggml_tensor * post_ffw_norm = nullptr;   // [n_embd]           post_mlp_layernorm
};

struct text_weights {
    ggml_tensor * tok_embd = nullptr;     // [n_embd, n_vocab]  read in place from the file (get_rows on the CPU)
    std::vector<text_layer> layers;
    ggml_tensor * output_norm = nullptr;  // [n_embd]
    ggml_tensor * output = nullptr;       // [n_embd, n_vocab]  token_embd when the file has no output.weight
};

struct model_params {
    int n_gpu_layers = 0;  // last N layers on the GPU; < 0 or > n_layer: all (+ the output head)
    int n_threads = 0;     // 0: physical cores
    bool repack = true;    // CPU: use ggml's repacked weight layouts where supported
    // Load progress in [0, 1]; returning false aborts loading (autoglm::error "aborted").
    std::function<bool(float)> progress;
    std::function<void(const std::string &)> log;
};

class text_model {
public:
    text_model(const std::string & path, const model_params & params);
    text_model(const text_model &) = delete;
    text_model & operator=(const text_model &) = delete;

    const text_hparams & hparams() const { return hp_; }
    const text_weights & weights() const { return w_; }
    backend_set & backends() const { return *backends_; }
    // Which backend holds layer il's weights (and so should hold its KV cache).
    ggml_backend_t layer_backend(int il) const;
    int n_gpu_layers() const { return n_gpu_layers_; }
    // Where the weights are, read off their buffers: each layer's device, the output head's and the
    // token embedding's (llama.cpp keeps the embedding lookup on the CPU; so do we).
    struct weight_placement {
        std::vector<std::string> layers;
        std::string output, token_embd;
    };
    weight_placement placement() const;

    const vocab_data & vocab() const { return vocab_; }
    const tokenizer & tok() const { return *tokenizer_; }
    const std::vector<int32_t> & eog_ids() const { return eog_ids_; }
    const std::string & chat_template() const { return chat_template_; }
    const std::string & path() const { return path_; }
    const std::string & name() const { return name_; }
    size_t weight_bytes() const { return weight_bytes_; }
    size_t mapped_bytes() const;  // of which read in place from the file's mapping (weight_store.h)
    // How many matrices are held in our interleaved layout (block32_x16.h), which only our kernels
    // multiply (so ggml's MUL_MAT nodes never see them: an importance matrix cannot be collected).
    int interleaved_weights() const { return n_interleaved_; }
    // Sessions over one model share its backends (the CPU backend's work buffer, a GPU stream), so
    // their graph computations take turns: each micro-batch runs under this lock.
    std::mutex & compute_mutex() const { return compute_mutex_; }

private:
    // Loading, in order: the file's hyperparameters and vocabulary, the devices, then the tensors
    // (shapes checked against the hyperparameters) and their data.
    void read_hparams(const gguf_file & f);
    void read_vocab(const gguf_file & f);
    void init_backends(const model_params & params);
    void create_tensors(const gguf_file & f, const model_params & params);

    std::string path_, name_, chat_template_;
    text_hparams hp_;
    text_weights w_;
    std::unique_ptr<backend_set> backends_;
    std::unique_ptr<gguf_file> file_;        // kept open: the token embedding is read in place from its mapping
    std::unique_ptr<weight_store> store_;
    int n_gpu_layers_ = 0;
    bool output_on_gpu_ = false;             // the output head and its norm on the GPU (all layers there)
    vocab_data vocab_;
    std::unique_ptr<tokenizer> tokenizer_;
    std::vector<int32_t> eog_ids_;
    size_t weight_bytes_ = 0;
    int n_interleaved_ = 0;
    mutable std::mutex compute_mutex_;
};

}  // namespace autoglm
