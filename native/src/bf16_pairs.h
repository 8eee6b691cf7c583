// F32 rows rounded to BF16 pairs, the operand layout of vdpbf16ps: what the AVX512_BF16 kernels
// (gemm_float.cpp's avx512_bf16 variant, cpu_attention_bf16.inc) pack their inputs into.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#    include <immintrin.h>

#    include <algorithm>
#    include <cstdint>
#    include <cstring>

#    define AUTOGLM_TARGET_BF16_PAIRS __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace autoglm {

// A mask of the first n of 16 lanes (all of them for n >= 16).
AUTOGLM_TARGET_BF16_PAIRS inline __mmask16 first_lanes16(int n) {
    return n >= 16 ? (__mmask16) 0xFFFF : (__mmask16) ((1u << n) - 1);
}

// x[0, n) times scale, rounded to BF16 (nearest even, vcvtne2ps2bf16), as (n + 1) / 2 pairs
// (x[2t] low, x[2t + 1] high) in out; an odd n's last high half is zero.
AUTOGLM_TARGET_BF16_PAIRS inline void to_bf16_pairs(const float * x, int n, float scale, uint32_t * out) {
    const __m512 s = _mm512_set1_ps(scale);
    for (int k = 0; k < n; k += 32) {
        const int left = n - k;
        const __m512 v0 = _mm512_mul_ps(_mm512_maskz_loadu_ps(first_lanes16(left), x + k), s);
        const __m512 v1 = _mm512_mul_ps(_mm512_maskz_loadu_ps(first_lanes16(std::max(0, left - 16)), x + k + 16), s);
        const __m512i pairs = (__m512i) _mm512_cvtne2ps_pbh(v1, v0);  // v0 fills the low half
        _mm512_mask_storeu_epi32(out + k / 2, first_lanes16((std::min(left, 32) + 1) / 2), pairs);
    }
}

// Columns [j0, j0 + ncols) of BF16 weights w (row j: output column j, row_bytes apart; n rows) over
// k [k0, k0 + kc) as panels of P columns, bp[panel][pair][P]: pair p holds w[j][k0 + 2p] low and
// w[j][k0 + 2p + 1] high, the halves vdpbf16ps and tdpbf16ps multiply into one F32 lane; kp_stride
// pairs per panel (at least (kc + 1) / 2). Zero past kc (an odd kc's last high half too), up to
// kp_stride, and for columns past n. k0 is even, so a pair never straddles two blocks of k.
inline void pack_bf16_weight_pairs(const uint8_t * w, size_t row_bytes, int64_t n, int64_t j0, int64_t ncols, int P, int64_t k0,
                                   int kc, int kp_stride, uint32_t * bp) {
    const int whole = kc / 2;
    for (int64_t jj = 0; jj < ncols; ++jj) {
        uint32_t * dst = bp + (size_t) (jj / P) * kp_stride * P + jj % P;
        const int64_t j = j0 + jj;
        int p = 0;
        if (j < n) {
            const uint16_t * s = (const uint16_t *) (w + (size_t) j * row_bytes) + k0;
            for (; p < whole; ++p) {
                uint32_t pair;
                std::memcpy(&pair, s + 2 * p, sizeof pair);
                dst[(size_t) p * P] = pair;
            }
            if (kc % 2) dst[(size_t) p++ * P] = s[kc - 1];
        }
        for (; p < kp_stride; ++p) dst[(size_t) p * P] = 0;
    }
}

}  // namespace autoglm

#endif
