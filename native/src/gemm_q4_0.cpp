// ref: ggml-cpu quants.c ggml_vec_dot_q4_0_q8_0 (the arithmetic: int8 dots per 32-block, scaled by
//      both blocks' scales) and quantize_row_q8_0 (activations: d = max|x| / 127, q = round(x / d)).
#include "gemm_q4_0.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "error.h"
#include "ggml.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define AUTOGLM_GEMM_X86 1
#include <immintrin.h>

#include "avx2_reduce.h"
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
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace {

struct q8_rows {
    std::vector<int8_t> q;     // m x k
    std::vector<float> d;      // m x nb: the block's scale
    std::vector<int32_t> s8;   // m x nb: 8 x sum(q), the Q4_0 offset's share
};

// Rows [r0, r1) of a into q8 blocks (round to nearest even, as ggml's AVX2 quantize_row_q8_0).
void quantize_rows(const float * a, int64_t k, int64_t r0, int64_t r1, q8_rows & out) {
    const int64_t nb = k / q4_0_block;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t r = r0; r < r1; ++r) {
        for (int64_t b = 0; b < nb; ++b) {
            const float * x = a + r * k + b * q4_0_block;
            __m256 v[4];
            __m256 amax = _mm256_setzero_ps();
            for (int i = 0; i < 4; ++i) {
                v[i] = _mm256_loadu_ps(x + 8 * i);
                amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
            }
            const float mx = avx2::hmax(amax);
            const float d = mx / 127.0f;
            const __m256 id = _mm256_set1_ps(mx != 0.0f ? 127.0f / mx : 0.0f);
            __m256i q[4];
            __m256i sum = _mm256_setzero_si256();
            for (int i = 0; i < 4; ++i) {
                q[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
                sum = _mm256_add_epi32(sum, q[i]);
            }
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            p = _mm256_permutevar8x32_epi32(p, order);
            _mm256_storeu_si256((__m256i *) (out.q.data() + r * k + b * q4_0_block), p);
            out.d[r * nb + b] = d;
            out.s8[r * nb + b] = 8 * avx2::hsum(sum);
        }
    }
}

// Columns [c0, c0 + 8) of w (fewer at the right edge: zero weights, zero scale) as unsigned nibble
// values, 8 vectors per block: vector j holds k = 4j .. 4j+3 of each column.
void unpack_panel(const uint8_t * w, int64_t n, int64_t nb, int64_t c0, __m256i * panel, float * dw) {
    const __m128i low = _mm_set1_epi8(0x0F);
    for (int64_t b = 0; b < nb; ++b) {
        __m256i v[8];
        for (int c = 0; c < 8; ++c) {
            if (c0 + c >= n) {
                v[c] = _mm256_setzero_si256();
                dw[b * 8 + c] = 0.0f;
                continue;
            }
            const uint8_t * blk = w + ((c0 + c) * nb + b) * q4_0_block_bytes;
            uint16_t h;
            std::memcpy(&h, blk, 2);
            dw[b * 8 + c] = ggml_fp16_to_fp32(h);
            const __m128i qs = _mm_loadu_si128((const __m128i *) (blk + 2));
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
inline void kernel_4x8(const __m256i * panel, const float * dw, int64_t nb, const q8_rows & a, int64_t k,
                       const int64_t * rows, float out[4][8]) {
    const __m256i ones = _mm256_set1_epi16(1);
    const int8_t * q[4];
    for (int r = 0; r < 4; ++r) q[r] = a.q.data() + rows[r] * k;
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
            const int64_t i = rows[r] * nb + b;
            const __m256i dot = _mm256_sub_epi32(_mm256_madd_epi16(s[r], ones), _mm256_set1_epi32(a.s8[i]));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dwv, _mm256_set1_ps(a.d[i])), acc[r]);
        }
    }
    for (int r = 0; r < 4; ++r) _mm256_storeu_ps(out[r], acc[r]);
}

void panels(const uint8_t * w, int64_t n, int64_t k, const q8_rows & a, int64_t m, float * c, int64_t p0, int64_t p1) {
    const int64_t nb = k / q4_0_block;
    // 32-byte aligned by hand: std::vector<__m256i> would rely on over-aligned allocation
    std::vector<uint8_t> panel_bytes((size_t) nb * 8 * sizeof(__m256i) + 32);
    auto * panel = reinterpret_cast<__m256i *>((reinterpret_cast<uintptr_t>(panel_bytes.data()) + 31) & ~uintptr_t(31));
    std::vector<float> dw((size_t) nb * 8);
    for (int64_t p = p0; p < p1; ++p) {
        const int64_t c0 = p * 8, nc = std::min<int64_t>(8, n - c0);
        unpack_panel(w, n, nb, c0, panel, dw.data());
        for (int64_t m0 = 0; m0 < m; m0 += 4) {
            int64_t rows[4];
            for (int r = 0; r < 4; ++r) rows[r] = std::min(m0 + r, m - 1);
            float out[4][8];
            kernel_4x8(panel, dw.data(), nb, a, k, rows, out);
            for (int r = 0; r < 4 && m0 + r < m; ++r) std::memcpy(c + (m0 + r) * n + c0, out[r], (size_t) nc * sizeof(float));
        }
    }
}

}  // namespace
#pragma GCC pop_options
#endif  // AUTOGLM_GEMM_X86

void gemm_q4_0(const uint8_t * w, int64_t n, int64_t k, const float * a, int64_t m, float * c, int n_threads) {
    if (k % q4_0_block != 0 || n <= 0 || m <= 0) throw invalid_argument("gemm_q4_0: K must be a multiple of 32, M and N positive");
    if (!gemm_q4_0_available()) throw error("gemm_q4_0: this CPU lacks AVX2/FMA/F16C");
#if AUTOGLM_GEMM_X86
    const int nt = std::max(1, n_threads);
    const int64_t nb = k / q4_0_block;
    q8_rows q;
    q.q.resize((size_t) (m * k));
    q.d.resize((size_t) (m * nb));
    q.s8.resize((size_t) (m * nb));
    std::vector<std::thread> pool;
    for (int t = 0; t < nt; ++t) {
        pool.emplace_back([&, t] { quantize_rows(a, k, m * t / nt, m * (t + 1) / nt, q); });
    }
    for (auto & th : pool) th.join();
    pool.clear();
    const int64_t n_panels = (n + 7) / 8;
    for (int t = 0; t < nt; ++t) {
        pool.emplace_back([&, t] { panels(w, n, k, q, m, c, n_panels * t / nt, n_panels * (t + 1) / nt); });
    }
    for (auto & th : pool) th.join();
#else
    (void) w; (void) a; (void) c; (void) n_threads;
#endif
}

}  // namespace autoglm
