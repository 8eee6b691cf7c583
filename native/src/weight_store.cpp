#include "weight_store.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_set>

#include "block32_x16.h"
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

ggml_tensor * weight_store::checked(const std::string & name, std::vector<int64_t> ne, bool required, tensor_role role) const {
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
    return ft;
}

ggml_tensor * weight_store::create(const std::string & name, std::vector<int64_t> ne, ggml_backend_buffer_type_t buft,
                                   bool required, tensor_role role) {
    ggml_tensor * ft = checked(name, std::move(ne), required, role);
    if (!ft) return nullptr;
    ggml_tensor * t = ggml_dup_tensor(ctx_for(buft), ft);
    ggml_set_name(t, name.c_str());
    pending_.push_back({t, f_.tensor_data(name), t->type});
    return t;
}

ggml_tensor * weight_store::create_interleaved(const std::string & name, std::vector<int64_t> ne) {
    ggml_tensor * t = create(name, std::move(ne), ggml_backend_cpu_buffer_type());
    if (!x16_applies(t)) throw error("weight_store: '" + name + "' cannot take the interleaved layout");
    pending_.back().interleave = true;
    x16_mark(t);
    return t;
}

ggml_tensor * weight_store::create_as(const std::string & name, std::vector<int64_t> ne, ggml_backend_buffer_type_t buft,
                                      ggml_type type) {
    ggml_tensor * t = create(name, std::move(ne), buft, /*required=*/true, tensor_role::weight);
    const ggml_type from = t->type;
    auto is_float = [](ggml_type x) { return x == GGML_TYPE_F32 || x == GGML_TYPE_F16 || x == GGML_TYPE_BF16; };
    if (from == type || !is_float(from) || !is_float(type)) return t;
    // Retype before allocation: the context has no data yet, so only the strides change.
    t->type = type;
    t->nb[0] = ggml_type_size(type);
    t->nb[1] = t->nb[0] * t->ne[0];
    for (int i = 2; i < GGML_MAX_DIMS; ++i) t->nb[i] = t->nb[i - 1] * t->ne[i - 1];
    pending_.back().file_type = from;
    return t;
}

// One tensor's file bytes (type `from`) into `t` (a float type) through F32, set in one call: a
// repacking buffer type takes whole tensors only.
static void set_converted(ggml_tensor * t, const uint8_t * data, ggml_type from) {
    const int64_t n = ggml_nelements(t);
    std::vector<float> f32((size_t) n);
    if (from == GGML_TYPE_F32) std::memcpy(f32.data(), data, (size_t) n * sizeof(float));
    else ggml_get_type_traits(from)->to_float(data, f32.data(), n);
    if (t->type == GGML_TYPE_F32) {
        ggml_backend_tensor_set(t, f32.data(), 0, ggml_nbytes(t));
        return;
    }
    std::vector<uint8_t> out(ggml_nbytes(t));
    ggml_get_type_traits(t->type)->from_float_ref(f32.data(), out.data(), n);
    ggml_backend_tensor_set(t, out.data(), 0, out.size());
}

ggml_tensor * weight_store::create_mapped(const std::string & name, std::vector<int64_t> ne) {
    const uint8_t * data = f_.tensor_data(name);
    // ggml's CPU buffers need 32-byte aligned data (GGUF's default alignment gives it).
    if (!data || (uintptr_t) data % 32 != 0) return create(name, std::move(ne), ggml_backend_cpu_buffer_type());
    ggml_tensor * ft = checked(name, std::move(ne), /*required=*/true, tensor_role::weight);
    if (!mapped_ctx_) {
        ggml_init_params ip{8 * ggml_tensor_overhead(), nullptr, /*no_alloc=*/true};
        mapped_ctx_.reset(ggml_init(ip));
        if (!mapped_ctx_) throw out_of_memory("out of memory creating a tensor context");
    }
    ggml_tensor * t = ggml_dup_tensor(mapped_ctx_.get(), ft);
    ggml_set_name(t, name.c_str());
    f_.prefetch(data, ggml_nbytes(t));
    mapped_.emplace_back(t, data);
    return t;
}

ggml_tensor * weight_store::create_extra(ggml_backend_buffer_type_t buft, ggml_type type, int64_t ne0, int64_t ne1,
                                         const char * name) {
    ggml_tensor * t = ggml_new_tensor_2d(ctx_for(buft), type, ne0, ne1);
    ggml_set_name(t, name);
    return t;
}

// Why an allocation failed, with the numbers a user needs to choose what to do.
std::string weight_store::alloc_failure(ggml_context * c, ggml_backend_buffer_type_t buft) const {
    size_t need = 0, largest = 0;
    for (ggml_tensor * t = ggml_get_first_tensor(c); t; t = ggml_get_next_tensor(c, t)) {
        const size_t n = ggml_backend_buft_get_alloc_size(buft, t);
        need += n;
        largest = std::max(largest, n);
    }
    auto mib = [](size_t b) { return std::to_string((b + (1u << 20) - 1) >> 20) + " MiB"; };
    std::string msg =
        "cannot allocate " + mib(need) + " of " + ggml_backend_buft_name(buft) + " memory for the " + what_ + " weights";
    const size_t max_size = ggml_backend_buft_get_max_size(buft);
    if (largest > max_size)
        msg += " (its largest tensor, " + mib(largest) + ", exceeds the device's buffer limit of " + mib(max_size) + ")";
    ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
    if (dev && ggml_backend_dev_type(dev) != GGML_BACKEND_DEVICE_TYPE_CPU) {
        size_t free_mem = 0, total_mem = 0;
        ggml_backend_dev_memory(dev, &free_mem, &total_mem);
        msg += "; " + std::string(ggml_backend_dev_name(dev)) + " reports " + mib(free_mem) + " free of " + mib(total_mem) +
               ": put fewer layers on the GPU (n_gpu_layers / -ngl), keep the vision tower on the CPU "
               "(mmproj_offload=False / --no-mmproj-offload), or use a smaller quantization";
    } else {
        msg += "; free memory or use a smaller quantization";
    }
    return msg;
}

void weight_store::map_plain_cpu_weights() {
    const auto it = ctx_of_.find(ggml_backend_cpu_buffer_type());
    if (it == ctx_of_.end()) return;
    std::unordered_set<const ggml_tensor *> plain;
    for (ggml_tensor * t = ggml_get_first_tensor(it->second); t; t = ggml_get_next_tensor(it->second, t)) plain.insert(t);
    std::vector<pending> in_place, rest;
    for (const pending & p : pending_) {
        const bool as_stored = p.file_type == p.t->type && !p.interleave && (uintptr_t) p.data % 32 == 0;  // ggml's CPU alignment
        (plain.count(p.t) && as_stored ? in_place : rest).push_back(p);
    }
    if (in_place.empty()) return;
    const uint8_t *lo = in_place.front().data, *hi = lo;
    for (const pending & p : in_place) {
        lo = std::min(lo, p.data);
        hi = std::max(hi, p.data + ggml_nbytes(p.t));
    }
    // ref: llama.cpp's mmap loading (llama_model_loader::load_all_data): one buffer over the mapped bytes
    ggml_backend_buffer_t buf = ggml_backend_cpu_buffer_from_ptr(const_cast<uint8_t *>(lo), (size_t) (hi - lo));
    if (!buf) throw out_of_memory(f_.path() + ": cannot map its weights");
    bufs_.emplace_back(buf);
    ggml_backend_buffer_set_usage(buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    for (const pending & p : in_place) {
        if (ggml_backend_tensor_alloc(buf, p.t, const_cast<uint8_t *>(p.data)) != GGML_STATUS_SUCCESS) {
            throw out_of_memory(f_.path() + ": cannot map tensor '" + std::string(ggml_get_name(p.t)) + "'");
        }
        mapped_bytes_ += ggml_nbytes(p.t);
    }
    f_.prefetch(lo, (size_t) (hi - lo));  // read ahead in the background where the file is not cached
    pending_ = std::move(rest);
}

namespace {

// Threads for n parts of a load: up to 4, and no more than the machine has or the parts.
int load_threads(int64_t n) {
    return (int) std::min<int64_t>(n, std::min(4u, std::max(1u, std::thread::hardware_concurrency())));
}

// fn(i0, i1) over [0, n) in contiguous parts on up to 4 threads: the first touch of the fresh memory is
// most of a copy's or regrouping's time, and it scales with the threads (a thread costs ~50 us; every
// tensor with two parts takes them, so the tests' small models run this path too).
template <class Fn>
void in_parallel(int64_t n, Fn fn) {
    const int threads = load_threads(n);
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i) {
        try {
            pool.emplace_back(fn, n * i / threads, n * (i + 1) / threads);
        } catch (const std::system_error &) {  // no thread to be had: this one does that part
            fn(n * i / threads, n * (i + 1) / threads);
        }
    }
    if (threads > 0) fn(0, n / threads);
    for (std::thread & th : pool) th.join();
}

// A tensor of ggml's repacking CPU buffer type, which rearranges Q4_0, Q4_K, IQ4_NL ... for its kernels
// in set_tensor, a whole tensor per call, touching nothing but that tensor.
bool in_cpu_repack_buffer(const ggml_tensor * t) {
    return t->buffer && std::strcmp(ggml_backend_buft_name(ggml_backend_buffer_get_type(t->buffer)), "CPU_REPACK") == 0;
}

}  // namespace

// The repacking takes whole tensors, so the threads take a tensor at a time; each is first read from the
// page cache (pread) into a scratch copy, which is several times faster than faulting the mapping's
// pages in (a scratch copy per thread: up to 4 x the largest tensor, 63 MB for the 9B ffn_up in Q4_0,
// for the length of the load). On one thread, faulting the mapping in, the 9B Q4_0 took 3-14 s to load
// on a 2-core Zen 1 VM.
void weight_store::set_repacked(const std::vector<pending> & list, size_t & done, size_t total,
                                const std::function<bool(float)> & progress) {
    std::atomic<size_t> next{0}, finished{0};
    std::atomic<bool> stop{false};
    std::mutex failure_mutex;
    std::exception_ptr failure;
    bool abort_asked = false;  // written by the calling thread only
    auto work = [&](bool report) {
        std::unique_ptr<uint8_t[]> scratch;
        size_t scratch_bytes = 0;
        try {
            for (size_t i = next++; i < list.size() && !stop; i = next++) {
                const pending & p = list[i];
                const size_t n = ggml_nbytes(p.t);
                if (n > scratch_bytes) {
                    scratch.reset(new uint8_t[n]);
                    scratch_bytes = n;
                }
                f_.read(p.data, scratch.get(), n);
                ggml_backend_tensor_set(p.t, scratch.get(), 0, n);
                f_.release(p.data, n);
                finished += n;
                if (report && progress && !progress(total ? (float) (done + finished) / (float) total : 1.0f)) {
                    abort_asked = true;
                    stop = true;
                }
            }
        } catch (...) {  // a failed allocation, or what progress threw: the first one is rethrown
            std::lock_guard<std::mutex> lock(failure_mutex);
            if (!failure) failure = std::current_exception();
            stop = true;
        }
    };
    std::vector<std::thread> pool;
    for (int i = 1; i < load_threads((int64_t) list.size()); ++i) {
        try {
            pool.emplace_back(work, false);
        } catch (const std::system_error &) {  // fewer threads: the others take more tensors
            break;
        }
    }
    work(true);
    for (std::thread & th : pool) th.join();
    done += finished;
    if (failure) std::rethrow_exception(failure);
    if (abort_asked) throw aborted(f_.path() + ": loading aborted by the progress callback");
    if (progress && !list.empty() && !progress(total ? (float) done / (float) total : 1.0f)) {
        throw aborted(f_.path() + ": loading aborted by the progress callback");
    }
}

void weight_store::load(const std::function<bool(float)> & progress) {
    static const bool mmap_off = std::getenv("AUTOGLM_MMAP") && std::string(std::getenv("AUTOGLM_MMAP")) == "0";
    if (in_place_ && !mmap_off) map_plain_cpu_weights();
    for (auto & [buft, c] : ctx_of_) {
        ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors_from_buft(c, buft);
        if (!buf) {
            bool all_placed = true;  // every tensor of the context read in place: nothing to allocate
            for (ggml_tensor * t = ggml_get_first_tensor(c); t && all_placed; t = ggml_get_next_tensor(c, t))
                all_placed = t->data != nullptr;
            if (all_placed) continue;
            throw out_of_memory(alloc_failure(c, buft));
        }
        ggml_backend_buffer_set_usage(buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        bufs_.emplace_back(buf);
        bytes_ += ggml_backend_buffer_get_size(buf);
    }
    for (auto & [t, data] : mapped_) {
        // ref: llama.cpp's mmap loading (llama_model_loader::load_all_data): a buffer over the mapped bytes.
        ggml_backend_buffer_t buf = ggml_backend_cpu_buffer_from_ptr(const_cast<uint8_t *>(data), ggml_nbytes(t));
        if (!buf || ggml_backend_tensor_alloc(buf, t, const_cast<uint8_t *>(data)) != GGML_STATUS_SUCCESS) {
            throw out_of_memory(f_.path() + ": cannot map tensor '" + std::string(ggml_get_name(t)) + "'");
        }
        ggml_backend_buffer_set_usage(buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        bufs_.emplace_back(buf);
        mapped_bytes_ += ggml_nbytes(t);
    }
    mapped_.clear();
    // progress counts the bytes read in place as done at once (mapping them costs nothing)
    size_t total = mapped_bytes_, done = mapped_bytes_;
    for (const pending & p : pending_) total += ggml_nbytes(p.t);
    if (progress && (done > 0 || pending_.empty()) && !progress(total ? (float) done / (float) total : 1.0f)) {
        throw aborted(f_.path() + ": loading aborted by the progress callback");
    }
    std::vector<pending> repacked, rest;
    for (const pending & p : pending_) {
        (!p.interleave && p.file_type == p.t->type && in_cpu_repack_buffer(p.t) ? repacked : rest).push_back(p);
    }
    set_repacked(repacked, done, total, progress);
    for (const pending & p : rest) {
        // plain locals, not structured bindings: C++17 lambdas cannot capture those (clang refuses)
        ggml_tensor * t = p.t;
        const uint8_t * data = p.data;
        const ggml_type from = p.file_type;
        const bool interleave = p.interleave;
        const size_t row_bytes = ggml_row_size(t->type, t->ne[0]);
        if (interleave) {  // a host buffer: regrouped straight into the tensor's memory, 16 rows at a time
            in_parallel(t->ne[1] / x16_rows, [&](int64_t g0, int64_t g1) {
                const size_t at = (size_t) g0 * x16_rows * row_bytes;
                x16_repack(t->type, data + at, (g1 - g0) * x16_rows, t->ne[0], (uint8_t *) t->data + at);
            });
        } else if (from == t->type && ggml_backend_buffer_is_host(t->buffer)) {
            // from the page cache, not through the mapping
            in_parallel(ggml_nelements(t) / t->ne[0], [&](int64_t r0, int64_t r1) {
                f_.read(data + r0 * row_bytes, (uint8_t *) t->data + r0 * row_bytes, (size_t) (r1 - r0) * row_bytes);
            });
        } else if (from == t->type) {
            ggml_backend_tensor_set(t, data, 0, ggml_nbytes(t));  // repacking buffer types convert here
        } else {
            set_converted(t, data, from);
        }
        f_.release(data, ggml_row_size(from, t->ne[0]) * (ggml_nelements(t) / t->ne[0]));
        done += ggml_nbytes(t);
        if (progress && !progress(total ? (float) done / (float) total : 1.0f)) {
            throw aborted(f_.path() + ": loading aborted by the progress callback");
        }
    }
    pending_.clear();
}

}  // namespace autoglm
