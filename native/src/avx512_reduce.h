// Horizontal reductions of AVX-512 registers shared by our GEMVs (gemv_block32.cpp, gemv_q5_k.cpp).
// Include only where x86 intrinsics are available; the functions carry their own target attribute.
#pragma once

#include <immintrin.h>

namespace autoglm::avx512 {

// Lane r of the result: the sum of row r's 8 int32 lanes, where z[p] holds row 2p in its low 256 bits
// and row 2p + 1 in its high ones. By 512-bit unpacks (vphaddd costs 3 uops on Zen 4): 128-bit lane L
// of b holds the sums of lane L of z[0..3], i.e. of rows 0, 2, 4, 6 (L = 0, 1) or 1, 3, 5, 7 (L = 2, 3).
__attribute__((target("avx512f,avx512vl"))) inline __m256i hsum_row_pairs(const __m512i z[4]) {
    const __m512i a01 = _mm512_add_epi32(_mm512_unpacklo_epi32(z[0], z[1]), _mm512_unpackhi_epi32(z[0], z[1]));
    const __m512i a23 = _mm512_add_epi32(_mm512_unpacklo_epi32(z[2], z[3]), _mm512_unpackhi_epi32(z[2], z[3]));
    const __m512i b = _mm512_add_epi32(_mm512_unpacklo_epi64(a01, a23), _mm512_unpackhi_epi64(a01, a23));
    const __m512i c = _mm512_add_epi32(b, _mm512_shuffle_i32x4(b, b, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_castsi512_si256(
        _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 0, 0, 0, 0, 0, 0, 0, 0), c));
}

// Two rows' 16-lane vectors folded into hsum_row_pairs's operand: row a's 8-lane partial sums in the
// low 256 bits, row b's in the high ones.
__attribute__((target("avx512f"))) inline __m512i fold_row_pair(__m512i a, __m512i b) {
    return _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                            _mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
}

}  // namespace autoglm::avx512
