// ref: ggml-cpu quants.c ggml_vec_dot_q4_0_q8_0 (the arithmetic: int8 dots per 32-block, scaled by
//      both blocks' scales) and quantize_row_q8_0 (activations: d = max|x| / 127, q = round(x / d)).
#include "gemm_q4_0.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "error.h"
#include "ggml-backend.h"
#include "ggml.h"

#if defined(__x86_64__) && defined(__GNUC__)
#    define AUTOGLM_GEMM_X86 1
#    include <immintrin.h>

#    include "avx2_reduce.h"
#endif

namespace autoglm {

bool gemm_q4_0_available() {
#if AUTOGLM_GEMM_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
    return false;
#endif
}

#if AUTOGLM_GEMM_X86
#    pragma GCC push_options
#    pragma GCC target("avx2,fma,f16c")
namespace {

// Quantized activations, one row per token: q[k] int8 | d[nb] F32 (the blocks' scales) | s8[nb] int32
// (8 x the block's sum of q: the Q4_0 offset's share).
struct q8_rows {
    uint8_t * base;
    int64_t k, nb;
    size_t row_bytes() const { return (size_t) k + (size_t) nb * 8; }
    int8_t * q(int64_t r) const { return (int8_t *) (base + r * row_bytes()); }
    float * d(int64_t r) const { return (float *) (base + r * row_bytes() + k); }
    int32_t * s8(int64_t r) const { return (int32_t *) (base + r * row_bytes() + k + nb * 4); }
};

// Rows [r0, r1) of a into q8 blocks (round to nearest even, as ggml's AVX2 quantize_row_q8_0).
void quantize_rows(const float * a, size_t a_row_stride, int64_t k, int64_t r0, int64_t r1, const q8_rows & out) {
    const int64_t nb = k / q4_0_block;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t r = r0; r < r1; ++r) {
        for (int64_t b = 0; b < nb; ++b) {
            const float * x = (const float *) ((const uint8_t *) a + r * a_row_stride) + b * q4_0_block;
            __m256 v[4];
            __m256 amax = _mm256_setzero_ps();
            for (int i = 0; i < 4; ++i) {
                v[i] = _mm256_loadu_ps(x + 8 * i);
                amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
            }
            // as ggml's AVX2 quantize_row_q8_0: q = round(x * 127 / max), the scale max / 127 kept in F16,
            // so that the dot products and scales are ggml's exactly (only the F32 summation order differs)
            const float mx = avx2::hmax(amax);
            const float d = mx / 127.0f;
            const __m256 id = _mm256_set1_ps(mx != 0.0f ? 127.0f / mx : 0.0f);
            __m256i q[4];
            __m256i sum = _mm256_setzero_si256();
            for (int i = 0; i < 4; ++i) {
                q[i] =
                    _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
                sum = _mm256_add_epi32(sum, q[i]);
            }
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            p = _mm256_permutevar8x32_epi32(p, order);
            _mm256_storeu_si256((__m256i *) (out.q(r) + b * q4_0_block), p);
            out.d(r)[b] = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
            out.s8(r)[b] = 8 * avx2::hsum(sum);
        }
    }
}

// Columns [c0, c0 + 8) of w (fewer at the right edge: zero weights, zero scale) as unsigned nibble
// values, 8 vectors per block: vector j holds k = 4j .. 4j+3 of each column. `repacked`: w is in
// ggml's CPU_REPACK layout for Q4_0 on x86 (block_q4_0x8 per 8 columns and block: the 8 F16 scales,
// then the columns' nibble bytes in chunks of 8 (bytes 0-7 of columns 0..7, then bytes 8-15), each
// byte XOR 0x88); else the GGUF layout (N rows of 18-byte blocks).
void unpack_panel(const uint8_t * w, int64_t n, int64_t nb, int64_t c0, bool repacked, __m256i * panel, float * dw) {
    const __m128i low = _mm_set1_epi8(0x0F);
    const __m128i flip = _mm_set1_epi8((char) 0x88);
    constexpr size_t x8_bytes = 8 * 2 + 8 * 16;  // one block_q4_0x8
    for (int64_t b = 0; b < nb; ++b) {
        __m256i v[8];
        for (int c = 0; c < 8; ++c) {
            if (c0 + c >= n) {
                v[c] = _mm256_setzero_si256();
                dw[b * 8 + c] = 0.0f;
                continue;
            }
            uint16_t h;
            __m128i qs;
            if (repacked) {
                const uint8_t * x8 = w + ((c0 / 8) * nb + b) * x8_bytes;
                std::memcpy(&h, x8 + 2 * c, 2);
                const __m128i lo8 = _mm_loadl_epi64((const __m128i *) (x8 + 16 + 8 * c));
                const __m128i hi8 = _mm_loadl_epi64((const __m128i *) (x8 + 16 + 64 + 8 * c));
                qs = _mm_xor_si128(_mm_unpacklo_epi64(lo8, hi8), flip);
            } else {
                const uint8_t * blk = w + ((c0 + c) * nb + b) * q4_0_block_bytes;
                std::memcpy(&h, blk, 2);
                qs = _mm_loadu_si128((const __m128i *) (blk + 2));
            }
            dw[b * 8 + c] = ggml_fp16_to_fp32(h);
            // elements 0..15 are the low nibbles, 16..31 the high ones
            v[c] = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), low), _mm_and_si128(qs, low));
        }
        // 8 x 8 transpose of 32-bit groups: column c's group j -> vector j, lane c
        const __m256i t0 = _mm256_unpacklo_epi32(v[0], v[1]), t1 = _mm256_unpackhi_epi32(v[0], v[1]);
        const __m256i t2 = _mm256_unpacklo_epi32(v[2], v[3]), t3 = _mm256_unpackhi_epi32(v[2], v[3]);
        const __m256i t4 = _mm256_unpacklo_epi32(v[4], v[5]), t5 = _mm256_unpackhi_epi32(v[4], v[5]);
        const __m256i t6 = _mm256_unpacklo_epi32(v[6], v[7]), t7 = _mm256_unpackhi_epi32(v[6], v[7]);
        const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
        const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
        const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
        const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
        __m256i * out = panel + b * 8;
        out[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
        out[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
        out[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
        out[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
        out[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
        out[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
        out[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
        out[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
    }
}

// Four rows (rows[0..3], possibly repeated at the bottom edge) x one panel -> out[4][8].
inline void kernel_4x8(const __m256i * panel, const float * dw, int64_t nb, const q8_rows & a, const int64_t * rows,
                       float out[4][8]) {
    const __m256i ones = _mm256_set1_epi16(1);
    const int8_t * q[4];
    for (int r = 0; r < 4; ++r) q[r] = a.q(rows[r]);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; ++b) {
        __m256i s[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
        const __m256i * wv = panel + b * 8;
        for (int j = 0; j < 8; ++j) {
            const __m256i w = _mm256_load_si256(wv + j);
            for (int r = 0; r < 4; ++r) {
                int32_t a4;
                std::memcpy(&a4, q[r] + b * q4_0_block + 4 * j, 4);
                s[r] = _mm256_add_epi16(s[r], _mm256_maddubs_epi16(w, _mm256_set1_epi32(a4)));
            }
        }
        const __m256 dwv = _mm256_loadu_ps(dw + b * 8);
        for (int r = 0; r < 4; ++r) {
            const __m256i dot = _mm256_sub_epi32(_mm256_madd_epi16(s[r], ones), _mm256_set1_epi32(a.s8(rows[r])[b]));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dwv, _mm256_set1_ps(a.d(rows[r])[b])), acc[r]);
        }
    }
    for (int r = 0; r < 4; ++r) _mm256_storeu_ps(out[r], acc[r]);
}

// Panels [p0, p1) of 8 columns for every row; c row r starts at c + r * c_row_stride (floats).
void panels(const uint8_t * w, bool repacked, int64_t n, int64_t k, const q8_rows & a, int64_t m, float * c, int64_t c_row_stride,
            int64_t p0, int64_t p1) {
    const int64_t nb = k / q4_0_block;
    // 32-byte aligned by hand: std::vector<__m256i> would rely on over-aligned allocation
    std::vector<uint8_t> panel_bytes((size_t) nb * 8 * sizeof(__m256i) + 32);
    auto * panel = reinterpret_cast<__m256i *>((reinterpret_cast<uintptr_t>(panel_bytes.data()) + 31) & ~uintptr_t(31));
    std::vector<float> dw((size_t) nb * 8);
    for (int64_t p = p0; p < p1; ++p) {
        const int64_t c0 = p * 8, nc = std::min<int64_t>(8, n - c0);
        unpack_panel(w, n, nb, c0, repacked, panel, dw.data());
        for (int64_t m0 = 0; m0 < m; m0 += 4) {
            int64_t rows[4];
            for (int r = 0; r < 4; ++r) rows[r] = std::min(m0 + r, m - 1);
            float out[4][8];
            kernel_4x8(panel, dw.data(), nb, a, rows, out);
            for (int r = 0; r < 4 && m0 + r < m; ++r)
                std::memcpy(c + (m0 + r) * c_row_stride + c0, out[r], (size_t) nc * sizeof(float));
        }
    }
}

}  // namespace
#    pragma GCC pop_options
#endif  // AUTOGLM_GEMM_X86

static bool is_repacked(const ggml_tensor * w) {
    return w->buffer && std::strcmp(ggml_backend_buft_name(ggml_backend_buffer_get_type(w->buffer)), "CPU_REPACK") == 0;
}

bool gemm_q4_0_applies(const ggml_tensor * w, int64_t n_rows) {
    static const bool off = [] {
        const char * v = std::getenv("AUTOGLM_GEMM");
        return v && std::strcmp(v, "ggml") == 0;
    }();
    if (off || n_rows < 32 || w->type != GGML_TYPE_Q4_0 || !w->buffer) return false;
    // in CPU memory: a plain host buffer, or ggml's repacked one (which does not call itself host)
    if (!ggml_backend_buffer_is_host(w->buffer) && !is_repacked(w)) return false;
    if (ggml_n_dims(w) != 2 || w->ne[0] % q4_0_block != 0) return false;
    if (is_repacked(w) && w->ne[1] % 8 != 0) return false;  // ggml repacks only whole groups of 8 rows
    return gemm_q4_0_available();
}

#if AUTOGLM_GEMM_X86
#    pragma GCC push_options
#    pragma GCC target("avx2,fma,f16c")
static void quantize_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0];
    const int64_t k = x->ne[0], m = x->ne[1];
    const q8_rows q{(uint8_t *) dst->data, k, k / q4_0_block};
    quantize_rows((const float *) x->data, x->nb[1], k, m * ith / nth, m * (ith + 1) / nth, q);
}

static void gemm_op(ggml_tensor * dst, int ith, int nth, void * user) {
    const ggml_tensor * w = (const ggml_tensor *) user;
    const ggml_tensor * xq = dst->src[0];
    const int64_t k = w->ne[0], n = w->ne[1], m = xq->ne[1];
    const q8_rows q{(uint8_t *) xq->data, k, k / q4_0_block};
    const int64_t n_panels = (n + 7) / 8;
    panels((const uint8_t *) w->data, is_repacked(w), n, k, q, m, (float *) dst->data, (int64_t) (dst->nb[1] / sizeof(float)),
           n_panels * ith / nth, n_panels * (ith + 1) / nth);
}
#    pragma GCC pop_options
#endif

ggml_tensor * gemm_q4_0_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
#if AUTOGLM_GEMM_X86
    if (x->type != GGML_TYPE_F32 || x->nb[0] != sizeof(float) || x->ne[0] != w->ne[0] || x->ne[2] != 1 || x->ne[3] != 1) {
        return ggml_mul_mat(ctx, w, x);
    }
    const int64_t k = w->ne[0], nb = k / q4_0_block;
    ggml_tensor * args[1] = {x};
    ggml_tensor * xq =
        ggml_custom_4d(ctx, GGML_TYPE_I8, k + nb * 8, x->ne[1], 1, 1, args, 1, quantize_op, GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(xq, gemm_q4_0_quantize_name);  // the profiler's family names
    ggml_tensor * args2[1] = {xq};
    ggml_tensor * out = ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], 1, 1, args2, 1, gemm_op, GGML_N_TASKS_MAX, w);
    ggml_set_name(out, gemm_q4_0_name);
    return out;
#else
    return ggml_mul_mat(ctx, w, x);
#endif
}

void gemm_q4_0(const uint8_t * w, int64_t n, int64_t k, const float * a, int64_t m, float * c, int n_threads) {
    if (k % q4_0_block != 0 || n <= 0 || m <= 0)
        throw invalid_argument("gemm_q4_0: K must be a multiple of 32, M and N positive");
    if (!gemm_q4_0_available()) throw error("gemm_q4_0: this CPU lacks AVX2/FMA/F16C");
#if AUTOGLM_GEMM_X86
    const int nt = std::max(1, n_threads);
    const int64_t nb = k / q4_0_block;
    std::vector<uint8_t> qbuf((size_t) m * ((size_t) k + (size_t) nb * 8));
    const q8_rows q{qbuf.data(), k, nb};
    std::vector<std::thread> pool;
    for (int t = 0; t < nt; ++t) {
        pool.emplace_back([&, t] { quantize_rows(a, (size_t) k * sizeof(float), k, m * t / nt, m * (t + 1) / nt, q); });
    }
    for (auto & th : pool) th.join();
    pool.clear();
    const int64_t n_panels = (n + 7) / 8;
    for (int t = 0; t < nt; ++t) {
        pool.emplace_back([&, t] { panels(w, false, n, k, q, m, c, n, n_panels * t / nt, n_panels * (t + 1) / nt); });
    }
    for (auto & th : pool) th.join();
#else
    (void) w;
    (void) a;
    (void) c;
    (void) n_threads;
#endif
}

}  // namespace autoglm
