// The activations of our Q4_K kernels (gemm_q4_k.cpp, gemv_q4_k.cpp): rows quantized per 256 as ggml's
// Q8_K, the vec_dot type of the K-quants, so that the integer sums equal ggml's.
// ref: ggml-quants.c quantize_row_q8_K_ref (q = nearest(x * -127 / x_maxabs), d = 1 / that scale).
// Include only where AUTOGLM_GEMM_X86 (gemm_panel.h) is set: the functions carry their own target.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "avx2_reduce.h"

namespace autoglm::gemm {

constexpr int q8_k_block = 256;
constexpr int q8_k_sub_blocks = 8;  // sub-blocks of 32 per block: the K-quants' scale groups

// One row per token: q[k] int8 | d[nb] F32 (per 256) | sums[k/32] int16 (the sub-blocks' sums of q:
// the share of the weights' mins).
struct q8k_rows {
    uint8_t * base;
    int64_t k, nb;
    static constexpr size_t bytes(int64_t k) { return (size_t) k + (size_t) (k / q8_k_block) * 4 + (size_t) (k / 32) * 2; }
    size_t row_bytes() const { return bytes(k); }
    int8_t * q(int64_t r) const { return (int8_t *) (base + r * row_bytes()); }
    float * d(int64_t r) const { return (float *) (base + r * row_bytes() + k); }
    int16_t * sums(int64_t r) const { return (int16_t *) (base + r * row_bytes() + k + nb * 4); }
};

// Rows [r0, r1) of a (rows a_row_stride bytes apart) as ggml's quantize_row_q8_K_ref: the scale comes
// from the first element of largest magnitude, sign included, and q rounds half to even.
__attribute__((target("avx2,fma,f16c"))) inline void quantize_q8_k_rows(const float * a, size_t a_row_stride, int64_t r0,
                                                                        int64_t r1, const q8k_rows & out) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t r = r0; r < r1; ++r) {
        const float * row = (const float *) ((const uint8_t *) a + r * a_row_stride);
        for (int64_t b = 0; b < out.nb; ++b) {
            const float * x = row + b * q8_k_block;
            int8_t * q = out.q(r) + b * q8_k_block;
            int16_t * sums = out.sums(r) + b * q8_k_sub_blocks;
            __m256 amax_v = _mm256_setzero_ps();
            for (int i = 0; i < q8_k_block; i += 8)
                amax_v = _mm256_max_ps(amax_v, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
            const float amax = avx2::hmax(amax_v);
            float max = 0.0f;
            for (int j = 0; j < q8_k_block && amax > 0.0f; ++j) {
                if (std::fabs(x[j]) == amax) {
                    max = x[j];
                    break;
                }
            }
            if (max == 0.0f) {  // an all-zero block (or one that is not a number): ggml's zero scale
                std::memset(q, 0, q8_k_block);
                std::memset(sums, 0, q8_k_sub_blocks * sizeof(int16_t));
                out.d(r)[b] = 0.0f;
                continue;
            }
            const float iscale = -127.0f / max;
            const __m256 is = _mm256_set1_ps(iscale);
            for (int g = 0; g < q8_k_sub_blocks; ++g) {
                __m256i qi[4];
                __m256i sum = _mm256_setzero_si256();
                for (int i = 0; i < 4; ++i) {
                    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + 32 * g + 8 * i), is);
                    qi[i] = _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
                    sum = _mm256_add_epi32(sum, qi[i]);
                }
                // |q| <= 127 (|x| <= amax), so the saturating packs change nothing: ggml's MIN(127, v)
                __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(qi[0], qi[1]), _mm256_packs_epi32(qi[2], qi[3]));
                _mm256_storeu_si256((__m256i *) (q + 32 * g), _mm256_permutevar8x32_epi32(p, order));
                sums[g] = (int16_t) avx2::hsum(sum);
            }
            out.d(r)[b] = 1.0f / iscale;
        }
    }
}

// One row x of k elements quantized into this thread's buffer (reused from call to call), as
// quantize_row_for_thread (gemm_q8_act.h) does for Q8_0.
inline q8k_rows quantize_row_q8_k_for_thread(const float * x, int64_t k) {
    thread_local std::vector<uint8_t> row;
    if (row.size() < q8k_rows::bytes(k)) row.resize(q8k_rows::bytes(k));
    const q8k_rows a{row.data(), k, k / q8_k_block};
    quantize_q8_k_rows(x, (size_t) k * sizeof(float), 0, 1, a);
    return a;
}

}  // namespace autoglm::gemm
