// The activations of our block-32 GEMMs (Q4_0, Q5_0, Q8_0 weights): rows quantized as ggml's Q8_0,
// the vec_dot type of all three, so that the integer dot products equal ggml's.
// ref: ggml-cpu arch/x86/quants.c quantize_row_q8_0 (d = max|x| / 127 kept in F16, q = round(x * 127 / max)).
// Include only where AUTOGLM_GEMM_X86 (gemm_panel.h) is set: the functions carry their own target.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "avx2_reduce.h"

namespace autoglm::gemm {

constexpr int q8_0_block = 32;

// One row per token: q[k] int8 | d[nb] F32 (the blocks' scales, F16-rounded) | corr[nb] int32 (each
// block's -offset x sum(q): what a weight type's offset adds to the dot product with u = w + offset,
// e.g. Q4_0's 8, stored ready to start the block's integer sum from; the affine types Q4_1 and Q5_1
// quantize with offset -1, so that it holds sum(q)).
struct q8_0_rows {
    uint8_t * base;
    int64_t k, nb;
    static constexpr size_t block_bytes = q8_0_block + 8;
    size_t row_bytes() const { return (size_t) nb * block_bytes; }
    int8_t * q(int64_t r) const { return (int8_t *) (base + r * row_bytes()); }
    float * d(int64_t r) const { return (float *) (base + r * row_bytes() + k); }
    int32_t * corr(int64_t r) const { return (int32_t *) (base + r * row_bytes() + k + nb * 4); }
};

// Rows [r0, r1) of a (rows a_row_stride bytes apart) into out, for weights stored as u = w + offset.
__attribute__((target("avx2,fma,f16c"))) inline void quantize_q8_0_rows(const float * a, size_t a_row_stride, int64_t r0,
                                                                        int64_t r1, const q8_0_rows & out, int offset) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t r = r0; r < r1; ++r) {
        for (int64_t b = 0; b < out.nb; ++b) {
            const float * x = (const float *) ((const uint8_t *) a + r * a_row_stride) + b * q8_0_block;
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
                q[i] =
                    _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
                sum = _mm256_add_epi32(sum, q[i]);
            }
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            p = _mm256_permutevar8x32_epi32(p, order);
            _mm256_storeu_si256((__m256i *) (out.q(r) + b * q8_0_block), p);
            out.d(r)[b] = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
            out.corr(r)[b] = -offset * avx2::hsum(sum);
        }
    }
}

// One row x of k elements quantized into this thread's buffer (reused from call to call): what each
// thread of a matrix-vector product does for itself, cheaper than a separate graph node and barrier.
inline q8_0_rows quantize_row_for_thread(const float * x, int64_t k, int offset) {
    thread_local std::vector<uint8_t> row;
    const q8_0_rows shape{nullptr, k, k / q8_0_block};
    if (row.size() < shape.row_bytes()) row.resize(shape.row_bytes());
    const q8_0_rows a{row.data(), k, k / q8_0_block};
    quantize_q8_0_rows(x, (size_t) k * sizeof(float), 0, 1, a, offset);
    return a;
}

// The activation bytes of 8 consecutive k in every 64-bit lane: the operand of our matrix-vector
// products, whose weight vectors hold 8 bytes of each column (4 for 32-bit lane 2c, 4 for 2c + 1).
__attribute__((target("avx512f"))) inline __m512i bcast8_512(const int8_t * q) {
    int64_t v;
    __builtin_memcpy(&v, q, 8);
    return _mm512_set1_epi64(v);
}
__attribute__((target("avx2"))) inline __m256i bcast8_256(const int8_t * q) {
    int64_t v;
    __builtin_memcpy(&v, q, 8);
    return _mm256_set1_epi64x(v);
}

// The activation bytes of 4 consecutive k, for a broadcast.
inline int32_t quad(const int8_t * q) {
    int32_t v;
    __builtin_memcpy(&v, q, 4);
    return v;
}

}  // namespace autoglm::gemm
