// What our prompt GEMMs (gemm_q4_0.cpp, gemm_q4_k.cpp) share: when the graph may use them, where
// their weights live, a 64-byte-aligned scratch buffer, and the 8 x 8 transpose of 32-bit groups that
// turns 8 columns of unpacked nibbles into the vectors their vpmaddubsw kernels read.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"

#if defined(__x86_64__) && defined(__GNUC__)
#    define AUTOGLM_GEMM_X86 1
#    include <immintrin.h>
// a kernel's functions exist only where they can be compiled
#    define AUTOGLM_GEMM_FN(f) f
// the AVX-512 VNNI variants (chosen at run time: gemm.cpp)
#    define AUTOGLM_TARGET_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
// the AVX-VNNI variants (256-bit vpdpbusd without AVX-512; also chosen at run time)
#    define AUTOGLM_TARGET_AVX_VNNI __attribute__((target("avxvnni,avx2,fma,f16c")))
#else
#    define AUTOGLM_GEMM_FN(f) nullptr
#endif

namespace autoglm::gemm {

// AUTOGLM_GEMM=ggml keeps ggml's kernels everywhere (for comparisons); AUTOGLM_GEMM=all uses ours
// wherever they can run, also below a kernel's measured break-even (kernel::min_k; for tests).
inline const char * env_setting() {
    static const char * v = std::getenv("AUTOGLM_GEMM");
    return v ? v : "";
}
inline bool disabled_by_env() { return std::strcmp(env_setting(), "ggml") == 0; }
inline bool forced_by_env() { return std::strcmp(env_setting(), "all") == 0; }

// The weight sits in ggml's repacked CPU buffer (CPU_REPACK: 8 columns interleaved per block).
inline bool is_repacked(const ggml_tensor * w) {
    return w->buffer && std::strcmp(ggml_backend_buft_name(ggml_backend_buffer_get_type(w->buffer)), "CPU_REPACK") == 0;
}

// A 2-D weight in CPU memory (a plain host buffer, or the repacked one, which does not call itself
// host) that a micro-batch of n_rows >= 32 multiplies: the common part of both GEMMs' rule.
inline bool weight_on_cpu(const ggml_tensor * w, int64_t n_rows) {
    if (disabled_by_env() || n_rows < 32 || !w->buffer || ggml_n_dims(w) != 2) return false;
    if (!ggml_backend_buffer_is_host(w->buffer) && !is_repacked(w)) return false;
    return !is_repacked(w) || w->ne[1] % 8 == 0;  // ggml repacks only whole groups of 8 rows
}

// x is 1 to max_rows F32 rows of w's K contiguous elements, the rows one after another: the operand of
// our matrix-vector products, which take a row at a time.
inline bool f32_rows(const ggml_tensor * w, const ggml_tensor * x, int64_t max_rows) {
    return x->type == GGML_TYPE_F32 && x->ne[0] == w->ne[0] && x->ne[1] >= 1 && x->ne[1] <= max_rows && x->ne[2] == 1 &&
           x->ne[3] == 1 && x->nb[0] == sizeof(float) && (x->ne[1] == 1 || x->nb[1] == x->ne[0] * sizeof(float));
}

// x is one such row: what a decode step's matmul multiplies (gemv_q4_0.h, gemv_block32.h).
inline bool one_f32_row(const ggml_tensor * w, const ggml_tensor * x) { return f32_rows(w, x, 1); }

// fn(t, n) for t = 0 .. n - 1 on n threads (the calling one runs t = 0): the thread pool of the test and
// benchmark entry points (in a graph our kernels run on ggml's threads).
template <class F>
inline void on_threads(int n, F fn) {
    n = n < 1 ? 1 : n;
    std::vector<std::thread> pool;
    for (int t = 1; t < n; ++t) pool.emplace_back(fn, t, n);
    fn(0, n);
    for (auto & th : pool) th.join();
}

#if AUTOGLM_GEMM_X86
// Software prefetch for a matrix-vector product's weight stream: the `bytes` at x (read next) asked
// for l2_ahead bytes ahead into L2 and l1_ahead ahead into L1, which the hardware prefetcher alone did
// not keep full (bench/README.md, "Decode: our matrix-vector product for Q4_0"). A thread's stream
// runs on across panel ends, and a prefetch never faults, also past the tensor's end.
inline void prefetch_stream(const uint8_t * x, int64_t bytes, int64_t l2_ahead, int64_t l1_ahead) {
    for (int64_t line = 0; line < bytes; line += 64) {
        _mm_prefetch((const char *) (x + l2_ahead + line), _MM_HINT_T1);
        _mm_prefetch((const char *) (x + l1_ahead + line), _MM_HINT_T0);
    }
}
#endif

// Whether t is a custom op node running fn, and its user data. ggml keeps both in the node's op_params
// (ggml_custom_op_params, ggml-impl.h: fun, n_tasks, userdata). The profiler knows our nodes by this,
// not by their names, which the graphs may change (the logits are "result_output" for tensor dumps).
inline bool is_custom_op(const ggml_tensor * t, ggml_custom_op_t fn, void ** userdata = nullptr) {
    struct custom_op_params {
        ggml_custom_op_t fun;
        int n_tasks;
        void * userdata;
    } p;
    static_assert(sizeof p <= GGML_MAX_OP_PARAMS, "ggml's custom op parameters");
    if (t->op != GGML_OP_CUSTOM) return false;
    std::memcpy(&p, t->op_params, sizeof p);
    if (p.fun != fn) return false;
    if (userdata) *userdata = p.userdata;
    return true;
}

// The operands of a decode matmul that our GEMV for ggml's repacked layout of `type` takes (gemv_q4_0.h,
// gemv_q4_k.h): w a 2-D weight of that type in the repacked buffer, whole groups of 8 rows of whole
// blocks, and x one F32 row; AUTOGLM_GEMM not "ggml". (The caller checks the CPU: gemm_available.)
inline bool repacked_gemv_operands(const ggml_tensor * w, const ggml_tensor * x, ggml_type type) {
    return w->type == type && !disabled_by_env() && ggml_n_dims(w) == 2 && is_repacked(w) && w->ne[1] % 8 == 0 &&
           w->ne[0] % ggml_blck_size(type) == 0 && one_f32_row(w, x);
}

// ggml_mul_mat(w, x) for one row x as one custom op `fn` on ggml's CPU threads, named `name` (for the
// profiler). w reaches fn through the user data: ggml's repacked buffer type refuses other ops on its
// tensors, so w cannot be a source.
inline ggml_tensor * repacked_gemv_node(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_custom_op_t fn,
                                        const char * name) {
    ggml_tensor * args[1] = {x};
    ggml_tensor * out = ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], 1, 1, 1, args, 1, fn, GGML_N_TASKS_MAX, w);
    ggml_set_name(out, name);
    return out;
}

// The same for our GEMVs on the GGUF layout (gemv_block32.h, gemv_q6_k.h): w a 2-D weight in a plain
// host buffer (not ggml's repacked one) with whole rows of blocks, x one F32 row. (The caller checks
// the type and the CPU.)
inline bool host_gemv_operands(const ggml_tensor * w, const ggml_tensor * x) {
    return !disabled_by_env() && ggml_n_dims(w) == 2 && w->buffer && ggml_backend_buffer_is_host(w->buffer) && !is_repacked(w) &&
           w->ne[0] % ggml_blck_size(w->type) == 0 && w->nb[1] == ggml_row_size(w->type, w->ne[0]) && one_f32_row(w, x);
}

// Their node: w and x are the sources of the custom op fn, the result [N, x's rows].
inline ggml_tensor * host_gemv_node(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_custom_op_t fn,
                                    const char * name) {
    ggml_tensor * args[2] = {w, x};
    ggml_tensor * out = ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], 1, 1, args, 2, fn, GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(out, name);
    return out;
}

// Bytes aligned to 64 by hand, enough for AVX-512 loads (std::vector<__m512i> would rely on
// over-aligned allocation).
struct aligned_bytes {
    std::vector<uint8_t> raw;
    explicit aligned_bytes(size_t n) : raw(n + 64) {}
    template <class T>
    T * as() {
        return reinterpret_cast<T *>((reinterpret_cast<uintptr_t>(raw.data()) + 63) & ~uintptr_t(63));
    }
};

// The loop every GEMM runs: the columns of panels [p0, p1) of 8 (c0 = 8 p0 up to min(n, 8 p1)), W at a
// time, each group unpacked once (unpack(c0)) and then multiplied by every row, R rows at a time
// (kernel(rows, out): the bottom edge repeats the last row). A group of W > 8 may reach past 8 p1 into
// another thread's panels: those columns are computed but not written.
template <int R, int W, class Unpack, class Kernel>
inline void panel_loop(int64_t n, int64_t m, float * c, int64_t c_row_stride, int64_t p0, int64_t p1, Unpack unpack,
                       Kernel kernel) {
    const int64_t c_end = n < p1 * 8 ? n : p1 * 8;
    for (int64_t c0 = p0 * 8; c0 < c_end; c0 += W) {
        const int64_t nc = c_end - c0 < W ? c_end - c0 : W;
        unpack(c0);
        for (int64_t m0 = 0; m0 < m; m0 += R) {
            int64_t rows[R];
            for (int r = 0; r < R; ++r) rows[r] = m0 + r < m ? m0 + r : m - 1;
            float out[R][W];
            kernel(rows, out);
            for (int r = 0; r < R && m0 + r < m; ++r)
                std::memcpy(c + (m0 + r) * c_row_stride + c0, out[r], (size_t) nc * sizeof(float));
        }
    }
}

// panel_loop over groups of `group` panels (8 x group columns), each tile of R rows multiplied by the
// group two panels (16 columns) per kernel call: kernel(i, rows, out, ldo) for panels i and i + 1 of
// the group, writing R rows of 16 floats ldo apart at out. unpack(c0, i) fills panel i with columns
// [c0, c0 + 8); a panel past this thread's last is cleared (clear(i)) instead, and a pair that starts
// there is skipped. Per vpmaddubsw that halves the activation broadcasts of one panel per call, and a
// tile's activations are read once per group instead of once per panel.
template <int R, int group, class Unpack, class Clear, class Kernel>
inline void paired_panel_loop(int64_t n, int64_t m, float * c, int64_t c_row_stride, int64_t p0, int64_t p1, Unpack unpack,
                              Clear clear, Kernel kernel) {
    static_assert(group % 2 == 0, "panels go in pairs");
    constexpr int W = group * 8;
    const int64_t c_end = n < p1 * 8 ? n : p1 * 8;
    int64_t g0 = 0;  // the group's first column
    panel_loop<R, W>(
        n, m, c, c_row_stride, p0, p1,
        [&](int64_t c0) {
            g0 = c0;
            for (int i = 0; i < group; ++i) {
                if (c0 + 8 * i < c_end) {
                    unpack(c0 + 8 * i, i);
                } else {
                    clear(i);
                }
            }
        },
        [&](const int64_t * rows, float out[R][W]) {
            for (int i = 0; i < group && g0 + 8 * i < c_end; i += 2) kernel(i, rows, out[0] + 8 * i, W);
        });
}

// panel_loop for kernels whose 16-column groups are two 8-column panels joined (the AVX-512 forms of
// the K-quant GEMMs): the scratch for nb blocks of each, unpack(c0, narrow) filling columns
// [c0, c0 + 8), join(lo, hi, wide), kernel(wide, rows, out) on R rows.
template <class Narrow, class Wide, int R, class Unpack, class Join, class Kernel>
inline void joined_panel_loop(int64_t nb, int64_t n, int64_t m, float * c, int64_t c_row_stride, int64_t p0, int64_t p1,
                              Unpack unpack, Join join, Kernel kernel) {
    aligned_bytes lo_bytes((size_t) nb * sizeof(Narrow)), hi_bytes((size_t) nb * sizeof(Narrow));
    aligned_bytes wide_bytes((size_t) nb * sizeof(Wide));
    Narrow *lo = lo_bytes.as<Narrow>(), *hi = hi_bytes.as<Narrow>();
    Wide * wide = wide_bytes.as<Wide>();
    panel_loop<R, 16>(
        n, m, c, c_row_stride, p0, p1,
        [&](int64_t c0) {
            unpack(c0, lo);
            unpack(c0 + 8, hi);
            join(lo, hi, wide);
        },
        [&](const int64_t * rows, float out[R][16]) { kernel(wide, rows, out); });
}

#if AUTOGLM_GEMM_X86
// v[c] holds 32 byte values of column c in k order; out[j] gets k = 4j .. 4j+3 of column c in its
// 32-bit lane c (an 8 x 8 transpose of 32-bit groups).
__attribute__((target("avx2"))) inline void transpose_columns(const __m256i v[8], __m256i out[8]) {
    const __m256i t0 = _mm256_unpacklo_epi32(v[0], v[1]), t1 = _mm256_unpackhi_epi32(v[0], v[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(v[2], v[3]), t3 = _mm256_unpackhi_epi32(v[2], v[3]);
    const __m256i t4 = _mm256_unpacklo_epi32(v[4], v[5]), t5 = _mm256_unpackhi_epi32(v[4], v[5]);
    const __m256i t6 = _mm256_unpacklo_epi32(v[6], v[7]), t7 = _mm256_unpackhi_epi32(v[6], v[7]);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    out[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    out[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    out[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    out[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    out[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    out[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    out[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    out[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}
#endif

}  // namespace autoglm::gemm

namespace autoglm::gemm {

// One of our prompt GEMMs, as the dispatcher (gemm.h) drives it: activations are quantized row by row
// into row_bytes(K) bytes, then each thread computes a range of 8-column panels for every row.
struct kernel {
    ggml_type type;             // the weight type it multiplies
    int block;                  // elements per weight block: K must be a multiple
    size_t act_block_bytes;     // bytes of quantized activations per block of K
    bool reads_repacked;        // it reads ggml's CPU_REPACK layout of this type (else only the GGUF one)
    int64_t min_k;              // the graph uses the AVX2 variant from this K on (where it was measured faster than ggml's)
    const char * name;             // the GEMM node's name in graphs
    const char * quantize_name;    // the row quantizer node's name
    const char * family;           // the profiler's family names for both
    const char * quantize_family;
    void (*quantize)(const float * a, size_t a_row_stride, int64_t k, int64_t r0, int64_t r1, uint8_t * q);
    // panels [p0, p1) of 8 columns for all m rows; `repacked`: w is in ggml's CPU_REPACK layout
    using panels_fn = void (*)(const uint8_t * w, bool repacked, int64_t n, int64_t k, const uint8_t * q, int64_t m, float * c,
                               int64_t c_row_stride, int64_t p0, int64_t p1);
    panels_fn panels;  // AVX2 (+ FMA, F16C)
    // The same product on AVX-512 VNNI (vpdpbusd on 16 columns at a time), bit for bit: the integer
    // sums are exact on both and the F32 steps the same. nullptr where a kernel has none.
    panels_fn panels_avx512_vnni = nullptr;
    // The same again on AMX-INT8 (tiles of 32 rows x 32 columns, one block of k at a time), bit for bit.
    panels_fn panels_amx = nullptr;
    // The same again on AVX-VNNI (vpdpbusd on 256-bit vectors, 8 columns at a time), bit for bit.
    panels_fn panels_avx_vnni = nullptr;
    // The product on AMX-BF16 tiles, the weights dequantized to BF16 and q the activations rounded to
    // BF16 (gemm_bf16_rows.h): within a tested bound, not the same bits (gemm_dequant_tiles.h).
    panels_fn panels_amx_bf16 = nullptr;
    size_t row_bytes(int64_t k) const { return (size_t) (k / block) * act_block_bytes; }
};

}  // namespace autoglm::gemm
