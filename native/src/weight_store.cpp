#include "weight_store.h"

#include <algorithm>

#include "error.h"

namespace autoglm {

std::string shape_str(const int64_t * ne, int n) {
    std::string s = "[";
    for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
}

weight_store::weight_store(const gguf_file & f, std::string what) : f_(f), what_(std::move(what)) {}

ggml_context * weight_store::ctx_for(ggml_backend_buffer_type_t buft) {
    auto it = ctx_of_.find(buft);
    if (it != ctx_of_.end()) return it->second;
    const size_t n_tensors = (size_t) gguf_get_n_tensors(f_.ctx()) + 4;  // + a few tensors of our own
    ggml_init_params ip{n_tensors * ggml_tensor_overhead(), nullptr, /*no_alloc=*/true};
    ggml_context * c = ggml_init(ip);
    if (!c) throw out_of_memory("out of memory creating a tensor context");
    ctxs_.emplace_back(c);
    ctx_of_[buft] = c;
    return c;
}

static bool weight_type_ok(ggml_type t) {
    if (t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16) return true;
    const ggml_type_traits * tr = ggml_get_type_traits(t);
    return ggml_is_quantized(t) && tr->to_float != nullptr && tr->blck_size > 0;
}

ggml_tensor * weight_store::create(const std::string & name, std::vector<int64_t> ne, ggml_backend_buffer_type_t buft,
                                   bool required, tensor_role role) {
    ggml_tensor * ft = f_.tensor(name);
    if (!ft) {
        if (!required) return nullptr;
        throw file_error(f_.path() + ": tensor '" + name + "' is missing (not a complete " + what_ + "?)");
    }
    ne.resize(GGML_MAX_DIMS, 1);
    if (!std::equal(ne.begin(), ne.end(), ft->ne)) {
        throw file_error(f_.path() + ": tensor '" + name + "' has shape " + shape_str(ft->ne, ggml_n_dims(ft)) + ", expected " +
                         shape_str(ne.data(), std::max(1, ggml_n_dims(ft))) + " from the file's hyperparameters");
    }
    const bool f32_only = role == tensor_role::f32 || std::all_of(ne.begin() + 1, ne.end(), [](int64_t d) { return d == 1; });
    if (f32_only ? ft->type != GGML_TYPE_F32 : !weight_type_ok(ft->type)) {
        throw file_error(f_.path() + ": tensor '" + name + "' is stored as " + ggml_type_name(ft->type) + ", which " +
                         (f32_only ? std::string("this runtime needs as F32 (it is a norm, bias or position table)")
                                   : std::string("is not a weight type (expected F32, F16, BF16 or a quantized type)")) +
                         "; convert the model again");
    }
    ggml_tensor * t = ggml_dup_tensor(ctx_for(buft), ft);
    ggml_set_name(t, name.c_str());
    pending_.emplace_back(t, f_.tensor_data(name));
    return t;
}

ggml_tensor * weight_store::create_extra(ggml_backend_buffer_type_t buft, ggml_type type, int64_t ne0, int64_t ne1,
                                         const char * name) {
    ggml_tensor * t = ggml_new_tensor_2d(ctx_for(buft), type, ne0, ne1);
    ggml_set_name(t, name);
    return t;
}

void weight_store::load(const std::function<bool(float)> & progress) {
    for (auto & [buft, c] : ctx_of_) {
        ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors_from_buft(c, buft);
        if (!buf) throw out_of_memory(std::string("cannot allocate ") + ggml_backend_buft_name(buft) + " memory for the " + what_ + " weights");
        ggml_backend_buffer_set_usage(buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        bufs_.emplace_back(buf);
        bytes_ += ggml_backend_buffer_get_size(buf);
    }
    size_t total = 0, done = 0;
    for (auto & [t, data] : pending_) total += ggml_nbytes(t);
    for (auto & [t, data] : pending_) {
        ggml_backend_tensor_set(t, data, 0, ggml_nbytes(t));  // repacking buffer types convert here
        f_.release(data, ggml_nbytes(t));
        done += ggml_nbytes(t);
        if (progress && !progress(total ? (float) done / (float) total : 1.0f)) {
            throw aborted(f_.path() + ": loading aborted by the progress callback");
        }
    }
    pending_.clear();
}

}  // namespace autoglm
