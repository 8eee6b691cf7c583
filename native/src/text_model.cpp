#include "text_model.h"

#include <cmath>

#include <algorithm>
#include <map>

#include "arch.h"
#include "block32_x16.h"
#include "error.h"
#include "weight_store.h"

namespace autoglm {

using arch::key;
using arch::tensor;
static const char * K(key k) { return arch::name(k); }

void text_model::read_hparams(const gguf_file & f) {
    const std::string file_arch = f.get_str(K(key::GENERAL_ARCHITECTURE));
    if (file_arch != arch::TEXT_ARCH) {
        throw file_error(
            f.path() + ": architecture '" + file_arch + "', expected a GLM-4 text model ('glm4')" +
            (file_arch == arch::VISION_ARCH ? " - this is a vision projector (mmproj) file; pass it as the mmproj" : ""));
    }
    hp_.n_embd = f.get_u32(K(key::TEXT_EMBEDDING_LENGTH));
    hp_.n_layer = f.get_u32(K(key::TEXT_BLOCK_COUNT));
    hp_.n_ff = f.get_u32(K(key::TEXT_FEED_FORWARD_LENGTH));
    hp_.n_head = f.get_u32(K(key::TEXT_HEAD_COUNT));
    hp_.n_head_kv = f.get_u32(K(key::TEXT_HEAD_COUNT_KV), hp_.n_head);
    hp_.n_ctx_train = f.get_u32(K(key::TEXT_CONTEXT_LENGTH), 4096);
    if (hp_.n_head == 0 || hp_.n_head_kv == 0 || hp_.n_head % hp_.n_head_kv) {
        throw file_error(f.path() + ": head counts " + std::to_string(hp_.n_head) + " / " + std::to_string(hp_.n_head_kv) +
                         " (attention.head_count / head_count_kv) are not valid for grouped-query attention");
    }
    hp_.head_dim = f.get_u32(K(key::TEXT_KEY_LENGTH), hp_.n_embd / hp_.n_head);
    hp_.n_rot = f.get_u32(K(key::TEXT_ROPE_DIMENSION_COUNT), hp_.head_dim);
    if (hp_.n_rot == 0 || hp_.n_rot % 2 || hp_.n_rot > hp_.head_dim) {
        throw file_error(f.path() + ": rope.dimension_count " + std::to_string(hp_.n_rot) + " must be even and <= head_dim " +
                         std::to_string(hp_.head_dim));
    }
    hp_.rope_theta = f.get_f32(K(key::TEXT_ROPE_FREQ_BASE), 10000.0f);
    hp_.rms_eps = f.get_f32(K(key::TEXT_RMS_EPS));
    if (!(std::isfinite(hp_.rope_theta) && hp_.rope_theta > 0.0f)) {
        throw file_error(f.path() + ": rope.freq_base = " + std::to_string(hp_.rope_theta) +
                         " must be a positive number "
                         "(GLM-4 uses 10000)");
    }
    if (!(std::isfinite(hp_.rms_eps) && hp_.rms_eps > 0.0f && hp_.rms_eps < 1.0f)) {
        throw file_error(f.path() + ": attention.layer_norm_rms_epsilon = " + std::to_string(hp_.rms_eps) +
                         " must be a small positive number (GLM-4 uses 1e-5)");
    }
    // Every block has tensors of its own: a block_count beyond the file's tensor count is corrupt, and
    // would size per-layer tables (and the KV cache) before the first missing tensor is noticed.
    if (hp_.n_layer == 0 || hp_.n_embd == 0 || hp_.n_ff == 0 || hp_.n_layer > f.n_tensors()) {
        throw file_error(f.path() + ": block_count " + std::to_string(hp_.n_layer) + ", embedding_length " +
                         std::to_string(hp_.n_embd) + ", feed_forward_length " + std::to_string(hp_.n_ff) +
                         " do not describe a model of " + std::to_string(f.n_tensors()) + " tensors");
    }
    if (f.has(K(key::TEXT_ROPE_SECTIONS))) {
        const auto s = f.get_i32_array(K(key::TEXT_ROPE_SECTIONS));
        for (size_t i = 0; i < s.size() && i < 4; ++i) {
            if (s[i] < 0) {
                throw file_error(f.path() + ": rope.dimension_sections[" + std::to_string(i) + "] = " + std::to_string(s[i]) +
                                 " is negative");
            }
            hp_.rope_sections[i] = s[i];
        }
        hp_.mrope = hp_.rope_sections[0] > 0 && hp_.rope_sections[1] > 0;
        const int sum = hp_.rope_sections[0] + hp_.rope_sections[1] + hp_.rope_sections[2] + hp_.rope_sections[3];
        if (hp_.mrope && sum != (int) hp_.n_rot / 2) {
            throw file_error(f.path() + ": rope.dimension_sections sum to " + std::to_string(sum) +
                             ", expected n_rot/2 = " + std::to_string(hp_.n_rot / 2));
        }
    }
}

void text_model::read_vocab(const gguf_file & f) {
    const std::string model = f.get_str(K(key::TOKENIZER_MODEL));
    if (model != "gpt2")
        throw file_error(f.path() + ": tokenizer.ggml.model is '" + model + "', expected 'gpt2' (byte-level BPE)");
    vocab_.tokens = f.get_str_array(K(key::TOKENIZER_TOKENS));
    vocab_.types = f.has(K(key::TOKENIZER_TOKEN_TYPE)) ? f.get_i32_array(K(key::TOKENIZER_TOKEN_TYPE))
                                                       : std::vector<int32_t>(vocab_.tokens.size(), TOKEN_NORMAL);
    vocab_.merges = f.get_str_array(K(key::TOKENIZER_MERGES));
    // HF's BPE option "ignore_merges" (a pre-token that is itself a token is not split). Our converter
    // records tokenizer.json's value; other glm4 files get llama.cpp's setting for GLM-4 (on).
    vocab_.ignore_merges = f.get_bool(K(key::AUTOGLM_IGNORE_MERGES), true);
    try {
        tokenizer_ = std::make_unique<tokenizer>(vocab_);
    } catch (const error & e) {
        throw file_error(f.path() + ": " + e.what());  // a malformed vocabulary is a bad file
    }
    chat_template_ = f.get_str(K(key::TOKENIZER_CHAT_TEMPLATE), "");

    // End of generation: our converter's complete list, else the file's eos/eot plus GLM's stop
    // tokens found by their text (<|endoftext|>, <|user|>, <|observation|>, and GLM-4.1V's </answer>,
    // the 4th id of its generation_config: an AutoGLM answer ends there, and clients parse what precedes it).
    if (f.has(K(key::AUTOGLM_EOG_IDS))) {
        eog_ids_ = f.get_i32_array(K(key::AUTOGLM_EOG_IDS));
    } else {
        for (const char * k : {K(key::TOKENIZER_EOS_ID), K(key::TOKENIZER_EOT_ID)}) {
            if (f.has(k)) eog_ids_.push_back((int32_t) f.get_u32(k));
        }
        for (const char * t : {"<|endoftext|>", "<|user|>", "<|observation|>", "</answer>"}) {
            auto it = std::find(vocab_.tokens.begin(), vocab_.tokens.end(), t);
            if (it != vocab_.tokens.end()) eog_ids_.push_back((int32_t) (it - vocab_.tokens.begin()));
        }
    }
    std::sort(eog_ids_.begin(), eog_ids_.end());
    eog_ids_.erase(std::unique(eog_ids_.begin(), eog_ids_.end()), eog_ids_.end());
}

text_model::text_model(const std::string & path, const model_params & params) : path_(path) {
    file_ = std::make_unique<gguf_file>(path);
    const gguf_file & f = *file_;
    read_hparams(f);
    read_vocab(f);
    name_ = f.get_str(K(key::GENERAL_NAME), "");
    init_backends(params);
    create_tensors(f, params);
    store_->load(params.progress);
    weight_bytes_ = store_->bytes() + store_->mapped_bytes();
}

size_t text_model::mapped_bytes() const { return store_->mapped_bytes(); }

void text_model::init_backends(const model_params & params) {
    const int n_layer = (int) hp_.n_layer;
    backends_ = std::make_unique<backend_set>(params.n_threads, params.n_gpu_layers != 0);
    if (params.n_gpu_layers != 0 && !backends_->gpu() && params.log) {
        params.log("no GPU backend in this build: n_gpu_layers=" + std::to_string(params.n_gpu_layers) +
                   " ignored, running on the CPU");
    }
    if (backends_->gpu()) {
        n_gpu_layers_ = (params.n_gpu_layers < 0 || params.n_gpu_layers > n_layer) ? n_layer : params.n_gpu_layers;
        output_on_gpu_ = params.n_gpu_layers < 0 || params.n_gpu_layers > n_layer;
    }
}

void text_model::create_tensors(const gguf_file & f, const model_params & params) {
    // Tensors take the file's type and the shape the architecture requires; matmul weights on the CPU
    // use a repacked layout where ggml has one.
    store_ = std::make_unique<weight_store>(f, "GLM-4 model");
    store_->read_cpu_weights_in_place();  // the decoder's unrepacked CPU matrices: no copy at load
    using use = backend_set::weight_use;
    auto create = [&](tensor id, int il, std::vector<int64_t> ne, ggml_backend_t where, use u,
                      bool required = true) -> ggml_tensor * {
        const std::string name = arch::name(id, il);
        ggml_backend_buffer_type_t buft = backends_->weight_buft(where, f.tensor(name), u, params.repack);
        // Q5_0/Q5_1/Q4_1 matrices in plain CPU memory: our interleaved layout (block32_x16.h), which
        // every batch size of the graph multiplies with our kernels
        const ggml_tensor * ft = f.tensor(name);
        if (ft && u == use::matmul && params.repack && buft == ggml_backend_cpu_buffer_type() && x16_applies(ft)) {
            ++n_interleaved_;
            return store_->create_interleaved(name, std::move(ne));
        }
        return store_->create(name, std::move(ne), buft, required);
    };

    const int64_t E = hp_.n_embd, Q = (int64_t) hp_.n_head * hp_.head_dim, KV = (int64_t) hp_.n_head_kv * hp_.head_dim;
    const std::string emb_name = arch::name(tensor::TOKEN_EMBD);
    ggml_tensor * emb_meta = f.tensor(emb_name);
    if (!emb_meta) throw file_error(path_ + ": tensor '" + emb_name + "' is missing");
    hp_.n_vocab = (uint32_t) emb_meta->ne[1];
    if (vocab_.tokens.size() != hp_.n_vocab) {
        throw file_error(path_ + ": the vocabulary has " + std::to_string(vocab_.tokens.size()) + " tokens but token_embd has " +
                         std::to_string(hp_.n_vocab) + " rows");
    }
    const int64_t V = hp_.n_vocab;
    ggml_backend_t out_dev = output_on_gpu_ ? backends_->gpu() : backends_->cpu();
    // The embedding lookup (get_rows) stays on the CPU, as in llama.cpp: it reads one row per token,
    // so the table is read in place from the file's mapping; only the rows of tokens seen become
    // resident (151,552 x 4096 rows: 1.2 GB in F16, 350 MB in Q4_K, of which a conversation touches a
    // few MB).
    w_.tok_embd = store_->create_mapped(emb_name, {E, V});
    w_.output_norm = create(tensor::OUTPUT_NORM, -1, {E}, out_dev, use::other);
    w_.output = create(tensor::OUTPUT, -1, {E, V}, out_dev, use::matmul, /*required=*/false);
    if (!w_.output) w_.output = w_.tok_embd;  // tied head (llama.cpp's fallback too)

    const int64_t F = hp_.n_ff;
    w_.layers.resize(hp_.n_layer);
    for (int il = 0; il < (int) hp_.n_layer; ++il) {
        ggml_backend_t dev = layer_backend(il);
        text_layer & l = w_.layers[il];
        l.attn_norm = create(tensor::ATTN_NORM, il, {E}, dev, use::other);
        l.wq = create(tensor::ATTN_Q, il, {E, Q}, dev, use::matmul);
        l.bq = create(tensor::ATTN_Q_B, il, {Q}, dev, use::other, false);
        l.wk = create(tensor::ATTN_K, il, {E, KV}, dev, use::matmul);
        l.bk = create(tensor::ATTN_K_B, il, {KV}, dev, use::other, false);
        l.wv = create(tensor::ATTN_V, il, {E, KV}, dev, use::matmul);
        l.bv = create(tensor::ATTN_V_B, il, {KV}, dev, use::other, false);
        l.wo = create(tensor::ATTN_OUT, il, {Q, E}, dev, use::matmul);
        l.post_attn_norm = create(tensor::ATTN_POST_NORM, il, {E}, dev, use::other);
        l.ffn_norm = create(tensor::FFN_NORM, il, {E}, dev, use::other);
        l.ffn_up = create(tensor::FFN_UP, il, {E, 2 * F}, dev, use::matmul);
        l.ffn_down = create(tensor::FFN_DOWN, il, {F, E}, dev, use::matmul);
        l.post_ffw_norm = create(tensor::FFN_POST_NORM, il, {E}, dev, use::other);
    }
}

text_model::weight_placement text_model::placement() const {
    weight_placement out;
    for (const text_layer & l : w_.layers) out.layers.push_back(device_of(l.wq));
    out.output = device_of(w_.output);
    out.token_embd = device_of(w_.tok_embd);
    return out;
}

ggml_backend_t text_model::layer_backend(int il) const {
    return (backends_->gpu() && il >= (int) hp_.n_layer - n_gpu_layers_) ? backends_->gpu() : backends_->cpu();
}

}  // namespace autoglm
