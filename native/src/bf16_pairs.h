// F32 rows rounded to BF16 pairs, the operand layout of vdpbf16ps: what the AVX512_BF16 kernels
// (gemm_float.cpp's avx512_bf16 variant, cpu_attention_bf16.inc) pack their inputs into.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#    include <immintrin.h>

#    include <algorithm>
#    include <cstdint>

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

}  // namespace autoglm

#endif
