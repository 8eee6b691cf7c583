#include "kv_cache.h"

#include <map>

#include "error.h"

namespace autoglm {

kv_cache::kv_cache(const text_model & model, uint32_t n_ctx, ggml_type type) : n_ctx_(n_ctx), type_(type) {
    if (type != GGML_TYPE_F16 && type != GGML_TYPE_F32) throw invalid_argument("kv cache type must be f16 or f32");
    if (n_ctx == 0) throw invalid_argument("n_ctx must be positive");
    const auto & hp = model.hparams();
    const int64_t n_embd_kv = (int64_t) hp.head_dim * hp.n_head_kv;
    std::map<ggml_backend_t, ggml_context *> ctx_of;
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        ggml_backend_t be = model.layer_backend((int) il);
        if (!ctx_of.count(be)) {
            ggml_init_params ip{2 * hp.n_layer * ggml_tensor_overhead(), nullptr, true};
            ctxs_.emplace_back(ggml_init(ip));
            ctx_of[be] = ctxs_.back().get();
        }
        ggml_context * c = ctx_of[be];
        k_.push_back(ggml_new_tensor_2d(c, type, n_embd_kv, n_ctx));
        v_.push_back(ggml_new_tensor_2d(c, type, n_embd_kv, n_ctx));
        ggml_format_name(k_.back(), "cache_k_l%u", il);
        ggml_format_name(v_.back(), "cache_v_l%u", il);
    }
    for (auto & [be, c] : ctx_of) {
        ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(c, be);
        if (!buf) {
            const bool on_cpu = be == model.backends().cpu();
            throw out_of_memory("cannot allocate the KV cache (" + std::to_string(n_ctx) + " cells) on " + ggml_backend_name(be) +
                                "; use a smaller n_ctx" +
                                (on_cpu ? "" : " or put fewer layers on the GPU (n_gpu_layers / -ngl)"));
        }
        ggml_backend_buffer_clear(buf, 0);  // no NaN garbage in cells that a mask hides (0 * NaN = NaN)
        bufs_.emplace_back(buf);
    }
}

size_t kv_cache::bytes() const {
    size_t n = 0;
    for (auto & b : bufs_) n += ggml_backend_buffer_get_size(b.get());
    return n;
}

std::vector<std::string> kv_cache::devices() const {
    std::vector<std::string> out;
    for (size_t il = 0; il < k_.size(); ++il) {
        const std::string k = device_of(k_[il]), v = device_of(v_[il]);
        out.push_back(k == v ? k : k + "/" + v);
    }
    return out;
}

void kv_cache::append(int32_t token, uint64_t key, const std::array<int32_t, 3> & pos, int32_t next_pos_after) {
    tokens_.push_back(token);
    keys_.push_back(key);
    pos_.push_back(pos);
    next_pos_hist_.push_back(next_pos_after);
    next_pos_ = next_pos_after;
}

void kv_cache::truncate(uint32_t n) {
    if (n >= tokens_.size()) return;
    tokens_.resize(n);
    keys_.resize(n);
    pos_.resize(n);
    next_pos_hist_.resize(n);
    next_pos_ = n ? next_pos_hist_.back() : 0;
}

}  // namespace autoglm
