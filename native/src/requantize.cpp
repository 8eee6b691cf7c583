#include "requantize.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "error.h"
#include "gguf_file.h"
#include "quantize.h"

namespace autoglm {

namespace {

struct gguf_ctx_deleter {
    void operator()(gguf_context * c) const { gguf_free(c); }
};
struct file_closer {
    void operator()(FILE * f) const {
        if (f) std::fclose(f);
    }
};

// Rows converted per slab: bounds the F32 staging buffer (and so the RSS) whatever the tensor size.
constexpr size_t SLAB_F32_BYTES = 64u << 20;

void write_all(FILE * f, const void * data, size_t n, const std::string & path) {
    if (n && std::fwrite(data, 1, n, f) != n) {
        throw error(path + ": write failed (" + std::strerror(errno) + "); is the disk full?");
    }
}

void write_zeros(FILE * f, size_t n, const std::string & path) {
    static const char zeros[64] = {};
    while (n) {
        const size_t k = std::min(n, sizeof zeros);
        write_all(f, zeros, k, path);
        n -= k;
    }
}

// Source rows -> F32, as llama-quantize converts them (ggml's own row converters).
void to_f32_serial(ggml_type type, const uint8_t * src, float * dst, int64_t n) {
    switch (type) {
        case GGML_TYPE_F32: std::memcpy(dst, src, (size_t) n * sizeof(float)); break;
        case GGML_TYPE_F16: ggml_fp16_to_fp32_row((const ggml_fp16_t *) src, dst, n); break;
        case GGML_TYPE_BF16: ggml_bf16_to_fp32_row((const ggml_bf16_t *) src, dst, n); break;
        default: throw invalid_argument("internal: no F32 conversion for " + std::string(ggml_type_name(type)));
    }
}

// The same on n_threads threads: one thread converting would leave the quantizer's threads idle
// for a third of the time on 2 cores (measured: 139% CPU for a 9B F16 -> Q4_K_M run).
void to_f32(ggml_type type, const uint8_t * src, float * dst, int64_t n, int n_threads) {
    if (type != GGML_TYPE_F32 && type != GGML_TYPE_F16 && type != GGML_TYPE_BF16)
        return to_f32_serial(type, src, dst, n);  // throws
    if (n_threads <= 0) n_threads = (int) std::max(1u, std::thread::hardware_concurrency());
    n_threads = (int) std::min<int64_t>(n_threads, std::max<int64_t>(1, n >> 18));  // >= 256k values per thread
    const size_t esz = ggml_type_size(type);
    std::vector<std::thread> pool;
    for (int t = 1; t < n_threads; ++t) {
        const int64_t a = n * t / n_threads, b = n * (t + 1) / n_threads;
        pool.emplace_back(to_f32_serial, type, src + a * esz, dst + a, b - a);
    }
    to_f32_serial(type, src, dst, n / n_threads);
    for (auto & th : pool) th.join();
}

}  // namespace

void requantize_gguf(const std::string & in_path, const std::string & out_path, const requant_options & opts) {
    gguf_file in(in_path);
    gguf_context * src = in.ctx();
    const int64_t n_in = gguf_get_n_tensors(src);
    AUTOGLM_CHECK_ARG((int64_t) opts.tensors.size() == n_in, in_path + ": the plan lists " + std::to_string(opts.tensors.size()) +
                                                                 " tensors, the file has " + std::to_string(n_in));

    std::unique_ptr<gguf_context, gguf_ctx_deleter> out(gguf_init_empty());
    // ref: llama_model_quantize_impl: copy every key, then (re)set the two quantization keys, drop split keys.
    gguf_set_kv(out.get(), src);
    gguf_set_val_u32(out.get(), "general.quantization_version", GGML_QNT_VERSION);
    gguf_set_val_u32(out.get(), "general.file_type", opts.file_type);
    for (const char * k : {"split.no", "split.count", "split.tensors.count"}) gguf_remove_key(out.get(), k);
    for (const auto & kv : opts.kv) {
        if (kv.is_string) gguf_set_val_str(out.get(), kv.key.c_str(), kv.str.c_str());
        else gguf_set_val_u32(out.get(), kv.key.c_str(), kv.u32);
    }

    std::unordered_set<std::string> seen;
    std::vector<ggml_tensor *> src_t;
    for (const auto & rt : opts.tensors) {
        ggml_tensor * t = in.tensor(rt.name);
        AUTOGLM_CHECK_ARG(t, in_path + ": the plan names tensor '" + rt.name + "', which the file does not have");
        AUTOGLM_CHECK_ARG(seen.insert(rt.name).second, "the plan lists tensor '" + rt.name + "' twice");
        if (rt.type != t->type) {
            AUTOGLM_CHECK_ARG(t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_F16 || t->type == GGML_TYPE_BF16,
                              in_path + ": tensor '" + rt.name + "' is stored as " + ggml_type_name(t->type) +
                                  "; re-quantizing a quantized tensor loses quality twice. Start from an F16, BF16 or F32 file "
                                  "(autoglm-gguf convert --outtype f16)");
            storage_row_size(rt.type, t->ne[0]);  // the row must fit the target's blocks
            AUTOGLM_CHECK_ARG(rt.imatrix.empty() || (int64_t) rt.imatrix.size() == t->ne[0] * t->ne[2],
                              "importance matrix for '" + rt.name + "' has " + std::to_string(rt.imatrix.size()) +
                                  " values, the tensor has " + std::to_string(t->ne[0]) +
                                  " columns: the imatrix was computed for another model");
        }
        gguf_add_tensor(out.get(), t);
        src_t.push_back(t);
    }
    for (const auto & rt : opts.tensors) gguf_set_tensor_type(out.get(), rt.name.c_str(), rt.type);

    std::unique_ptr<FILE, file_closer> f(std::fopen(out_path.c_str(), "wb"));
    if (!f) throw error(out_path + ": cannot create (" + std::strerror(errno) + ")");
    {
        std::vector<uint8_t> meta(gguf_get_meta_size(out.get()));
        gguf_get_meta_data(out.get(), meta.data());
        write_all(f.get(), meta.data(), meta.size(), out_path);
    }

    const size_t align = gguf_get_alignment(out.get());
    std::vector<float> f32;
    std::vector<uint8_t> q;
    uint64_t done_in = 0;
    for (size_t i = 0; i < opts.tensors.size(); ++i) {
        const requant_tensor & rt = opts.tensors[i];
        const ggml_tensor * t = src_t[i];
        if (opts.on_tensor) opts.on_tensor(i, done_in);
        const uint8_t * data = in.tensor_data(rt.name);
        const size_t in_bytes = ggml_nbytes(t);
        size_t written = 0;
        if (rt.type == t->type) {
            write_all(f.get(), data, in_bytes, out_path);
            written = in_bytes;
        } else {
            const int64_t n_per_row = t->ne[0];
            const int64_t nrows = ggml_nrows(t);
            const size_t in_row = ggml_row_size(t->type, n_per_row);
            const size_t out_row = ggml_row_size(rt.type, n_per_row);
            const int64_t slab = std::max<int64_t>(1, (int64_t) (SLAB_F32_BYTES / (n_per_row * sizeof(float))));
            const float * im = rt.imatrix.empty() ? nullptr : rt.imatrix.data();
            for (int64_t r0 = 0; r0 < nrows; r0 += slab) {
                const int64_t nr = std::min(slab, nrows - r0);
                f32.resize((size_t) (nr * n_per_row));
                q.resize((size_t) nr * out_row);
                to_f32(t->type, data + (size_t) r0 * in_row, f32.data(), nr * n_per_row, opts.n_threads);
                try {
                    quantize_rows(rt.type, f32.data(), q.data(), nr, n_per_row, opts.n_threads, im, /*validate=*/true);
                } catch (const invalid_argument & e) {
                    throw invalid_argument(in_path + ": tensor '" + rt.name + "': " + e.what());
                }
                write_all(f.get(), q.data(), q.size(), out_path);
                written += q.size();
            }
            in.release(data, in_bytes);  // converted: its pages can leave the resident set
        }
        write_zeros(f.get(), GGML_PAD(written, align) - written, out_path);
        done_in += in_bytes;
    }
    if (std::fflush(f.get()) != 0) throw error(out_path + ": write failed (" + std::strerror(errno) + ")");
    FILE * raw = f.release();
    if (std::fclose(raw) != 0) throw error(out_path + ": close failed (" + std::strerror(errno) + ")");
}

}  // namespace autoglm
