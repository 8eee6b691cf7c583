#include "text_model.h"

#include <cmath>

#include <algorithm>
#include <map>

#include "error.h"
#include "weight_store.h"

namespace autoglm {

namespace {

const char * const ARCH = "glm4";

std::string key(const char * suffix) { return std::string(ARCH) + "." + suffix; }

}  // namespace

void text_model::read_hparams(const gguf_file & f) {
    const std::string arch = f.get_str("general.architecture");
    if (arch != ARCH) {
        throw file_error(f.path() + ": architecture '" + arch + "', expected a GLM-4 text model ('glm4')" +
                    (arch == "clip" ? " - this is a vision projector (mmproj) file; pass it as the mmproj" : ""));
    }
    hp_.n_embd = f.get_u32(key("embedding_length"));
    hp_.n_layer = f.get_u32(key("block_count"));
    hp_.n_ff = f.get_u32(key("feed_forward_length"));
    hp_.n_head = f.get_u32(key("attention.head_count"));
    hp_.n_head_kv = f.get_u32(key("attention.head_count_kv"), hp_.n_head);
    hp_.n_ctx_train = f.get_u32(key("context_length"), 4096);
    if (hp_.n_head == 0 || hp_.n_head_kv == 0 || hp_.n_head % hp_.n_head_kv) {
        throw file_error(f.path() + ": head counts " + std::to_string(hp_.n_head) + " / " + std::to_string(hp_.n_head_kv) +
                    " (attention.head_count / head_count_kv) are not valid for grouped-query attention");
    }
    hp_.head_dim = f.get_u32(key("attention.key_length"), hp_.n_embd / hp_.n_head);
    hp_.n_rot = f.get_u32(key("rope.dimension_count"), hp_.head_dim);
    if (hp_.n_rot == 0 || hp_.n_rot % 2 || hp_.n_rot > hp_.head_dim) {
        throw file_error(f.path() + ": rope.dimension_count " + std::to_string(hp_.n_rot) + " must be even and <= head_dim " +
                    std::to_string(hp_.head_dim));
    }
    hp_.rope_theta = f.get_f32(key("rope.freq_base"), 10000.0f);
    hp_.rms_eps = f.get_f32(key("attention.layer_norm_rms_epsilon"));
    if (!(std::isfinite(hp_.rope_theta) && hp_.rope_theta > 0.0f)) {
        throw file_error(f.path() + ": rope.freq_base = " + std::to_string(hp_.rope_theta) + " must be a positive number "
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
    if (f.has(key("rope.dimension_sections"))) {
        const auto s = f.get_i32_array(key("rope.dimension_sections"));
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
            throw file_error(f.path() + ": rope.dimension_sections sum to " + std::to_string(sum) + ", expected n_rot/2 = " +
                        std::to_string(hp_.n_rot / 2));
        }
    }
}

void text_model::read_vocab(const gguf_file & f) {
    const std::string model = f.get_str("tokenizer.ggml.model");
    if (model != "gpt2") throw file_error(f.path() + ": tokenizer.ggml.model is '" + model + "', expected 'gpt2' (byte-level BPE)");
    vocab_.tokens = f.get_str_array("tokenizer.ggml.tokens");
    vocab_.types = f.has("tokenizer.ggml.token_type") ? f.get_i32_array("tokenizer.ggml.token_type")
                                                      : std::vector<int32_t>(vocab_.tokens.size(), TOKEN_NORMAL);
    vocab_.merges = f.get_str_array("tokenizer.ggml.merges");
    // HF's BPE option "ignore_merges" (a pre-token that is itself a token is not split). Our converter
    // records tokenizer.json's value; other glm4 files get llama.cpp's setting for GLM-4 (on).
    vocab_.ignore_merges = f.get_bool("autoglm.tokenizer.ignore_merges", true);
    try {
        tokenizer_ = std::make_unique<tokenizer>(vocab_);
    } catch (const error & e) {
        throw file_error(f.path() + ": " + e.what());  // a malformed vocabulary is a bad file
    }
    chat_template_ = f.get_str("tokenizer.chat_template", "");

    // End of generation: our converter's complete list, else the file's eos/eot plus GLM's stop
    // tokens found by their text (<|endoftext|>, <|user|>, <|observation|>, and GLM-4.1V's </answer>,
    // the 4th id of its generation_config: an AutoGLM answer ends there, and clients parse what precedes it).
    if (f.has("autoglm.eog_token_ids")) {
        eog_ids_ = f.get_i32_array("autoglm.eog_token_ids");
    } else {
        for (const char * k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"}) {
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
    name_ = f.get_str("general.name", "");

    const int n_layer = (int) hp_.n_layer;
    backends_ = std::make_unique<backend_set>(params.n_threads, params.n_gpu_layers != 0);
    if (params.n_gpu_layers != 0 && !backends_->gpu() && params.log) {
        params.log("no GPU backend in this build: n_gpu_layers=" + std::to_string(params.n_gpu_layers) + " ignored, running on the CPU");
    }
    if (backends_->gpu()) {
        n_gpu_layers_ = (params.n_gpu_layers < 0 || params.n_gpu_layers > n_layer) ? n_layer : params.n_gpu_layers;
        output_on_gpu_ = params.n_gpu_layers < 0 || params.n_gpu_layers > n_layer;
    }

    // Tensors take the file's type and the shape the architecture requires; matmul weights on the CPU
    // use a repacked layout where ggml has one.
    weights_ = std::make_unique<weight_store>(f, "GLM-4 model");
    enum class use { other, matmul };
    auto create = [&](const std::string & name, std::vector<int64_t> ne, ggml_backend_t where, use u,
                      bool required = true) -> ggml_tensor * {
        ggml_tensor * ft = f.tensor(name);
        ggml_backend_buffer_type_t buft;
        if (where == backends_->gpu()) {
            buft = ggml_backend_dev_buffer_type(backends_->gpu_dev());
        } else if (ft && u == use::matmul && params.repack) {
            buft = backends_->cpu_matmul_buft(ft);
        } else {
            buft = ggml_backend_dev_buffer_type(backends_->cpu_dev());
        }
        return weights_->create(name, std::move(ne), buft, required);
    };

    const int64_t E = hp_.n_embd, Q = (int64_t) hp_.n_head * hp_.head_dim, KV = (int64_t) hp_.n_head_kv * hp_.head_dim;
    ggml_tensor * emb_meta = f.tensor("token_embd.weight");
    if (!emb_meta) throw file_error(path + ": tensor 'token_embd.weight' is missing");
    hp_.n_vocab = (uint32_t) emb_meta->ne[1];
    if (vocab_.tokens.size() != hp_.n_vocab) {
        throw file_error(path + ": the vocabulary has " + std::to_string(vocab_.tokens.size()) + " tokens but token_embd has " +
                    std::to_string(hp_.n_vocab) + " rows");
    }
    const int64_t V = hp_.n_vocab;
    ggml_backend_t out_dev = output_on_gpu_ ? backends_->gpu() : backends_->cpu();
    // The embedding lookup (get_rows) stays on the CPU, as in llama.cpp: it reads one row per token,
    // so the table is read in place from the file's mapping; only the rows of tokens seen become
    // resident (151,552 x 4096 rows: 1.2 GB in F16, 350 MB in Q4_K, of which a conversation touches a
    // few MB).
    tok_embd_ = weights_->create_mapped("token_embd.weight", {E, V});
    output_norm_ = create("output_norm.weight", {E}, out_dev, use::other);
    output_ = create("output.weight", {E, V}, out_dev, use::matmul, /*required=*/false);
    if (!output_) output_ = tok_embd_;  // tied head (llama.cpp's fallback too)

    layers_.resize(n_layer);
    for (int il = 0; il < n_layer; ++il) {
        ggml_backend_t dev = layer_backend(il);
        const std::string p = "blk." + std::to_string(il) + ".";
        text_layer & l = layers_[il];
        l.attn_norm = create(p + "attn_norm.weight", {E}, dev, use::other);
        l.wq = create(p + "attn_q.weight", {E, Q}, dev, use::matmul);
        l.bq = create(p + "attn_q.bias", {Q}, dev, use::other, false);
        l.wk = create(p + "attn_k.weight", {E, KV}, dev, use::matmul);
        l.bk = create(p + "attn_k.bias", {KV}, dev, use::other, false);
        l.wv = create(p + "attn_v.weight", {E, KV}, dev, use::matmul);
        l.bv = create(p + "attn_v.bias", {KV}, dev, use::other, false);
        l.wo = create(p + "attn_output.weight", {Q, E}, dev, use::matmul);
        l.post_attn_norm = create(p + "post_attention_norm.weight", {E}, dev, use::other);
        l.ffn_norm = create(p + "ffn_norm.weight", {E}, dev, use::other);
        l.ffn_up = create(p + "ffn_up.weight", {E, 2 * (int64_t) hp_.n_ff}, dev, use::matmul);
        l.ffn_down = create(p + "ffn_down.weight", {(int64_t) hp_.n_ff, E}, dev, use::matmul);
        l.post_ffw_norm = create(p + "post_ffw_norm.weight", {E}, dev, use::other);
    }

    weights_->load(params.progress);
    weight_bytes_ = weights_->bytes() + weights_->mapped_bytes();
}

text_model::weight_placement text_model::placement() const {
    weight_placement out;
    for (const text_layer & l : layers_) out.layers.push_back(device_of(l.wq));
    out.output = device_of(output_);
    out.token_embd = device_of(tok_embd_);
    return out;
}

ggml_backend_t text_model::layer_backend(int il) const {
    return (backends_->gpu() && il >= (int) hp_.n_layer - n_gpu_layers_) ? backends_->gpu() : backends_->cpu();
}

}  // namespace autoglm
