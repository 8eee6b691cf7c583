// ref: ggml-cpu repack.cpp make_block_q4_Kx8 (the weights' layout) and ggml_gemm_q4_K_8x8_q8_K (the
//      F32 steps, as gemm_q4_k.cpp); ggml-quants.c get_scale_min_k4 (the 6-bit scales and mins).
#include "gemv_q4_k.h"

#include <cstring>
#include <string>

#include "error.h"
#include "gemm.h"
#include "gemm_panel.h"
#include "gemm_q4_k.h"

#if AUTOGLM_GEMM_X86
#    include "gemm_q8_act.h"  // gemm::bcast8_*
#    include "gemm_q8k_act.h"
#endif

namespace autoglm {

namespace {

constexpr size_t x8_bytes = 8 * 2 + 8 * 2 + 96 + 1024;  // one block_q4_Kx8: d, dmin, 8 x 12 scale bytes, nibbles
constexpr int scales_at = 32, qs_at = 128;              // offsets in a block_q4_Kx8
constexpr const char * node_name = "gemv_q4_K";

// The 8 columns' 6-bit scales (byte c of sc) and mins (byte c of m) of one sub-block, from its 12
// bytes: get_scale_min_k4's packing with the column in the place of the sub-block (c < 4: the low 6
// bits of bytes c and c + 4; c >= 4: a nibble of byte c + 4 below the top 2 bits of byte c - 4 or c).
struct sub_block_scales {
    uint64_t sc, m;
};
inline sub_block_scales unpack_scales(const uint8_t * s) {
    uint32_t w0, w1, w2;
    std::memcpy(&w0, s, 4);
    std::memcpy(&w1, s + 4, 4);
    std::memcpy(&w2, s + 8, 4);
    constexpr uint32_t low6 = 0x3F3F3F3F, low4 = 0x0F0F0F0F, top2 = 0x03030303;
    const uint32_t sc_hi = (w2 & low4) | (((w0 >> 6) & top2) << 4);
    const uint32_t m_hi = ((w2 >> 4) & low4) | (((w1 >> 6) & top2) << 4);
    return {(w0 & low6) | (uint64_t) sc_hi << 32, (w1 & low6) | (uint64_t) m_hi << 32};
}

#if AUTOGLM_GEMM_X86
// One block_q4_Kx8 (18 lines), 16 blocks ahead into L2 and one into L1: gemv_q4_0.cpp's distances
// (18 KB and ~1 KB).
inline void prefetch_block(const uint8_t * x) { gemm::prefetch_stream(x, x8_bytes, 16 * x8_bytes, x8_bytes); }

// All 8 sub-blocks' scales and mins of a block_q4_Kx8 at once, as int16: sc[h] lane 8 (j - 4h) + c =
// the scale of sub-block j for column c, j = 4h .. 4h+3; mins[h] the same for the mins. The 96 bytes
// are 24 dwords, sub-block j's 12 in dwords 3j .. 3j+2 (w0, w1, w2 of unpack_scales).
struct block_scales {
    __m512i sc[2], mins[2];
};
AUTOGLM_TARGET_AVX512_VNNI inline block_scales unpack_block_scales(const uint8_t * s) {
    const __m512i first = _mm512_loadu_si512(s), rest = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *) (s + 64)));
    // lanes 0-7: w0 of sub-block j = lane, 8-15: w1; then w2 in both halves (indices >= 16 read `rest`)
    const __m512i w01 =
        _mm512_permutex2var_epi32(first, _mm512_setr_epi32(0, 3, 6, 9, 12, 15, 18, 21, 1, 4, 7, 10, 13, 16, 19, 22), rest);
    __m512i w2 =
        _mm512_permutex2var_epi32(first, _mm512_setr_epi32(2, 5, 8, 11, 14, 17, 20, 23, 2, 5, 8, 11, 14, 17, 20, 23), rest);
    w2 = _mm512_mask_srli_epi32(w2, 0xFF00, w2, 4);  // the mins' nibbles are w2's high ones
    // x: bytes c = 0..3 (lanes 0-7 scales, 8-15 mins); y: bytes c = 4..7, the low 4 bits from w2 and
    // the top 2 from bits 6-7 of w0 (scales) or w1 (mins)
    const __m512i x = _mm512_and_si512(w01, _mm512_set1_epi32(0x3F3F3F3F));
    const __m512i top = _mm512_and_si512(_mm512_srli_epi32(w01, 2), _mm512_set1_epi32(0x30303030));
    const __m512i y = _mm512_ternarylogic_epi32(w2, _mm512_set1_epi32(0x0F0F0F0F), top, 0xEA);  // (a & b) | c
    // 64-bit lanes of lo: sub-blocks 0, 1, 4, 5 (scales), then 0, 1, 4, 5 (mins); of hi: 2, 3, 6, 7
    const __m512i lo = _mm512_unpacklo_epi32(x, y), hi = _mm512_unpackhi_epi32(x, y);
    const __m512i sc = _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), hi);
    const __m512i mins = _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15), hi);
    return {{_mm512_cvtepu8_epi16(_mm512_castsi512_si256(sc)), _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(sc, 1))},
            {_mm512_cvtepu8_epi16(_mm512_castsi512_si256(mins)), _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(mins, 1))}};
}

// Sub-block pairs p and p + 1 (p even) of a block_q4_Kx8: lanes 0-7 column c's sc[2p] S[2p] +
// sc[2p+1] S[2p+1] (S: the exact int8 dot product of the sub-block), lanes 8-15 the same for p + 1.
AUTOGLM_TARGET_AVX512_VNNI inline __m512i pair_dots(const uint8_t * x, const int8_t * q, const block_scales & s, int p) {
    const __m512i nibble = _mm512_set1_epi8(0x0F), high_nibble = _mm512_set1_epi8((char) 0xF0);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    // int16 lane 4c + e: the scale of sub-block 2pp + (e & 1) for column c (sc[p / 2] holds 4 of them)
    const __m512i pick[2] = {_mm512_set_epi16(15, 7, 15, 7, 14, 6, 14, 6, 13, 5, 13, 5, 12, 4, 12, 4, 11, 3, 11, 3, 10, 2, 10, 2,
                                              9, 1, 9, 1, 8, 0, 8, 0),
                             _mm512_set_epi16(31, 23, 31, 23, 30, 22, 30, 22, 29, 21, 29, 21, 28, 20, 28, 20, 27, 19, 27, 19, 26,
                                              18, 26, 18, 25, 17, 25, 17, 24, 16, 24, 16)};
    __m512i weighted[2];
    for (int h = 0; h < 2; ++h) {
        const int pp = p + h;
        // chunk 4pp + t: bytes 8t .. 8t+7 of the pair's 32 per column, column c in 64-bit lane c; the low
        // nibbles are sub-block 2pp, the high ones 2pp + 1 (kept x16, shifted back once below)
        __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
        for (int t = 0; t < 4; ++t) {
            const __m512i z = _mm512_loadu_si512(x + qs_at + 256 * pp + 64 * t);
            lo = _mm512_dpbusd_epi32(lo, _mm512_and_si512(z, nibble), gemm::bcast8_512(q + 64 * pp + 8 * t));
            hi = _mm512_dpbusd_epi32(hi, _mm512_and_si512(z, high_nibble), gemm::bcast8_512(q + 64 * pp + 32 + 8 * t));
        }
        // each lane is 16 products of <= 15 x 127: int16, so the pair rides one vpmaddwd with its scales
        // (hi's low 16 bits land in the odd int16 lanes: << 16 after >> 4, exact as hi is a multiple of 16)
        const __m512i joined = _mm512_mask_blend_epi16(0xAAAAAAAA, lo, _mm512_slli_epi32(_mm512_srai_epi32(hi, 4), 16));
        weighted[h] = _mm512_madd_epi16(joined, _mm512_permutexvar_epi16(pick[h], s.sc[p / 2]));
    }
    return _mm512_add_epi32(_mm512_permutex2var_epi32(weighted[0], even, weighted[1]),
                            _mm512_permutex2var_epi32(weighted[0], odd, weighted[1]));
}

// The mins' share of pairs p and p + 1 (p even), laid out as pair_dots: m[2p] bs[2p] + m[2p+1] bs[2p+1]
// per column (bs: the activations' sub-block sums).
AUTOGLM_TARGET_AVX512_VNNI inline __m512i pair_mins(const block_scales & s, const int16_t * bsums, int p) {
    // dword lane c < 8: (m[2p][c], m[2p+1][c]); lane 8 + c: sub-blocks 2p + 2 and 2p + 3
    const __m512i pick = _mm512_set_epi16(31, 23, 30, 22, 29, 21, 28, 20, 27, 19, 26, 18, 25, 17, 24, 16, 15, 7, 14, 6, 13, 5, 12,
                                          4, 11, 3, 10, 2, 9, 1, 8, 0);
    int64_t four;  // bs[2p .. 2p+3]
    std::memcpy(&four, bsums + 2 * p, 8);
    const __m512i sums = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                                  _mm512_castsi128_si512(_mm_cvtsi64_si128(four)));
    return _mm512_madd_epi16(_mm512_permutexvar_epi16(pick, s.mins[p / 2]), sums);
}

AUTOGLM_TARGET_AVX512_VNNI inline __m256 low(__m512 v) { return _mm512_castps512_ps256(v); }
AUTOGLM_TARGET_AVX512_VNNI inline __m256 high(__m512 v) {
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

// Panels [p0, p1) of 8 columns. Per super-block, two pairs of sub-blocks per vector (pair p in lanes
// 0-7, p + 1 in 8-15), each half added to the accumulators in pair order: the GEMM's F32 chain.
AUTOGLM_TARGET_AVX512_VNNI void gemv_panels(const uint8_t * w, int64_t nb, const gemm::q8k_rows & a, float * y, int64_t p0,
                                            int64_t p1) {
    const int8_t * q = a.q(0);
    const float * da = a.d(0);
    const int16_t * bsums = a.sums(0);
    for (int64_t p = p0; p < p1; ++p) {
        const uint8_t * panel = w + p * nb * (int64_t) x8_bytes;
        __m256 acc = _mm256_setzero_ps(), acc_min = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t * x = panel + b * (int64_t) x8_bytes;
            prefetch_block(x);
            const block_scales s = unpack_block_scales(x + scales_at);
            const __m256 dy = _mm256_set1_ps(da[b]);
            const __m256 dw_dy = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) x)), dy);
            const __m256 dm_dy = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (x + 16))), dy);
            for (int pp = 0; pp < 4; pp += 2) {
                const __m512 f = _mm512_cvtepi32_ps(pair_dots(x, q + 256 * b, s, pp));
                const __m512 fm = _mm512_cvtepi32_ps(pair_mins(s, bsums + 8 * b, pp));
                acc = _mm256_fmadd_ps(low(f), dw_dy, acc);
                acc_min = _mm256_fmadd_ps(low(fm), dm_dy, acc_min);
                acc = _mm256_fmadd_ps(high(f), dw_dy, acc);
                acc_min = _mm256_fmadd_ps(high(fm), dm_dy, acc_min);
            }
        }
        _mm256_storeu_ps(y + 8 * p, _mm256_sub_ps(acc, acc_min));
    }
}

// The AVX2 form, 4 columns per 256-bit vector: vpmaddubsw sums of 8 products (exact in 16 bits) per
// sub-block, weighted by the scales in the widening vpmaddwd; column order 0, 1, 4, 5, 2, 3, 6, 7
// (vphaddd's) until the store. Two panels at a time, so that each activation broadcast serves both;
// the scales are unpacked in 128-bit registers into memory, where each pair's are read back with one
// vbroadcasti128: 256-bit lane permutes cost Zen 1 (8 uops per vperm2i128) more than the whole
// unpacking (bench/README.md, Q4_K decode on the Zen 1).
#    define AUTOGLM_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))

// A vpshufb control that spreads scale bytes first .. first + 3 to int16 lanes 4c .. 4c+3 (zero
// high bytes): the multipliers of the 4 columns of a 256-bit vector.
AUTOGLM_TARGET_AVX2 inline __m256i spread4(int first) {
    const __m256i base = _mm256_setr_epi8(0, -128, 0, -128, 0, -128, 0, -128, 1, -128, 1, -128, 1, -128, 1, -128, 2, -128, 2,
                                          -128, 2, -128, 2, -128, 3, -128, 3, -128, 3, -128, 3, -128);
    return _mm256_add_epi8(base, _mm256_set1_epi16((int16_t) first));
}

// One block_q4_Kx8's scales and mins, column c of sub-block j in byte c of sc[j] (mins: m[j]): pair p
// (sub-blocks 2p, 2p + 1) is the 16 bytes at sc + 2p.
struct block_scales_avx2 {
    alignas(16) uint64_t sc[8], m[8];
};

// All 8 sub-blocks' scales and mins of a block_q4_Kx8 into out, as unpack_scales per sub-block but 4 at
// a time in 128-bit registers (one uop each on Zen 1; no lane crossing): the 12 bytes of 4 sub-blocks
// transposed to their w0, w1, w2 dwords. The fourth load of the second half reads 4 bytes past the
// scales (the nibbles that follow; unused).
AUTOGLM_TARGET_AVX2 inline void unpack_block_scales_avx2(const uint8_t * s, block_scales_avx2 & out) {
    const __m128i low6 = _mm_set1_epi8(0x3F), low4 = _mm_set1_epi8(0x0F), bits45 = _mm_set1_epi8(0x30);
    for (int h = 0; h < 2; ++h) {
        const uint8_t * g = s + 48 * h;
        const __m128i r0 = _mm_loadu_si128((const __m128i *) g), r1 = _mm_loadu_si128((const __m128i *) (g + 12));
        const __m128i r2 = _mm_loadu_si128((const __m128i *) (g + 24)), r3 = _mm_loadu_si128((const __m128i *) (g + 36));
        const __m128i t0 = _mm_unpacklo_epi32(r0, r1), t1 = _mm_unpackhi_epi32(r0, r1);
        const __m128i t2 = _mm_unpacklo_epi32(r2, r3), t3 = _mm_unpackhi_epi32(r2, r3);
        const __m128i w0 = _mm_unpacklo_epi64(t0, t2), w1 = _mm_unpackhi_epi64(t0, t2), w2 = _mm_unpacklo_epi64(t1, t3);
        // columns 4-7: w2's nibble below bits 6-7 of w0 (scales) or w1 (mins), moved to bits 4-5
        const __m128i sc_lo = _mm_and_si128(w0, low6);
        const __m128i sc_hi = _mm_or_si128(_mm_and_si128(w2, low4), _mm_and_si128(_mm_srli_epi32(w0, 2), bits45));
        const __m128i m_lo = _mm_and_si128(w1, low6);
        const __m128i m_hi =
            _mm_or_si128(_mm_and_si128(_mm_srli_epi32(w2, 4), low4), _mm_and_si128(_mm_srli_epi32(w1, 2), bits45));
        _mm_store_si128((__m128i *) (out.sc + 4 * h), _mm_unpacklo_epi32(sc_lo, sc_hi));
        _mm_store_si128((__m128i *) (out.sc + 4 * h + 2), _mm_unpackhi_epi32(sc_lo, sc_hi));
        _mm_store_si128((__m128i *) (out.m + 4 * h), _mm_unpacklo_epi32(m_lo, m_hi));
        _mm_store_si128((__m128i *) (out.m + 4 * h + 2), _mm_unpackhi_epi32(m_lo, m_hi));
    }
}

// Sub-block pair p of P block_q4_Kx8 (x[c]) against the activations q: per panel c, lanes in vphaddd's
// column order, sc[2p] S[2p] + sc[2p+1] S[2p+1] (S: the exact int8 dot product of the sub-block).
template <int P>
AUTOGLM_TARGET_AVX2 inline void pair_dots_avx2(const uint8_t * const * x, const int8_t * q, const block_scales_avx2 * s, int p,
                                               __m256i * out) {
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    __m256i lo[P][2], hi[P][2];  // per panel, columns 0-3 and 4-7
    for (int c = 0; c < P; ++c)
        for (int h = 0; h < 2; ++h) lo[c][h] = hi[c][h] = _mm256_setzero_si256();
    for (int t = 0; t < 4; ++t) {
        const __m256i a_lo = gemm::bcast8_256(q + 64 * p + 8 * t), a_hi = gemm::bcast8_256(q + 64 * p + 32 + 8 * t);
        for (int c = 0; c < P; ++c)
            for (int h = 0; h < 2; ++h) {
                const __m256i z = _mm256_loadu_si256((const __m256i *) (x[c] + qs_at + 256 * p + 64 * t + 32 * h));
                lo[c][h] = _mm256_add_epi16(lo[c][h], _mm256_maddubs_epi16(_mm256_and_si256(z, nibble), a_lo));
                hi[c][h] =
                    _mm256_add_epi16(hi[c][h], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(z, 4), nibble), a_hi));
                // keep the sums chains of adds (else GCC forms trees whose partial sums spill)
                asm("" : "+x"(lo[c][h]), "+x"(hi[c][h]));
            }
    }
    for (int c = 0; c < P; ++c) {
        const __m256i sc_pair = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *) (s[c].sc + 2 * p)));
        __m256i half[2];
        for (int h = 0; h < 2; ++h) {
            half[h] = _mm256_add_epi32(_mm256_madd_epi16(lo[c][h], _mm256_shuffle_epi8(sc_pair, spread4(4 * h))),
                                       _mm256_madd_epi16(hi[c][h], _mm256_shuffle_epi8(sc_pair, spread4(8 + 4 * h))));
        }
        out[c] = _mm256_hadd_epi32(half[0], half[1]);
    }
}

// P panels from `panel` (consecutive, nb blocks each) -> y[0 .. 8P).
template <int P>
AUTOGLM_TARGET_AVX2 void gemv_step_avx2(const uint8_t * panel, int64_t nb, const gemm::q8k_rows & a, float * y) {
    const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);  // vphaddd's column order; its own inverse
    // dword lane i: (min of sub-block 2p, of 2p + 1) for column order[i], as two int16
    const __m256i min_pairs = _mm256_setr_epi8(0, -128, 8, -128, 1, -128, 9, -128, 4, -128, 12, -128, 5, -128, 13, -128, 2, -128,
                                               10, -128, 3, -128, 11, -128, 6, -128, 14, -128, 7, -128, 15, -128);
    const int8_t * q = a.q(0);
    const float * da = a.d(0);
    const int16_t * bsums = a.sums(0);
    block_scales_avx2 s[P];
    __m256 acc[P], acc_min[P];
    for (int c = 0; c < P; ++c) acc[c] = acc_min[c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t * x[P];
        __m256 dw_dy[P], dm_dy[P];
        const __m256 dy = _mm256_set1_ps(da[b]);
        for (int c = 0; c < P; ++c) {
            x[c] = panel + (c * nb + b) * (int64_t) x8_bytes;
            prefetch_block(x[c]);
            unpack_block_scales_avx2(x[c] + scales_at, s[c]);
            dw_dy[c] =
                _mm256_mul_ps(_mm256_permutevar8x32_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) x[c])), order), dy);
            dm_dy[c] = _mm256_mul_ps(
                _mm256_permutevar8x32_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (x[c] + 16))), order), dy);
        }
        for (int pp = 0; pp < 4; ++pp) {
            int32_t bs;  // the activations' sums of sub-blocks 2pp and 2pp + 1
            std::memcpy(&bs, bsums + 8 * b + 2 * pp, 4);
            __m256i dots[P];
            pair_dots_avx2<P>(x, q + 256 * b, s, pp, dots);
            for (int c = 0; c < P; ++c) {
                const __m256i m_pair = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *) (s[c].m + 2 * pp)));
                const __m256i mins = _mm256_madd_epi16(_mm256_shuffle_epi8(m_pair, min_pairs), _mm256_set1_epi32(bs));
                acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots[c]), dw_dy[c], acc[c]);
                acc_min[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mins), dm_dy[c], acc_min[c]);
            }
        }
    }
    for (int c = 0; c < P; ++c) _mm256_storeu_ps(y + 8 * c, _mm256_permutevar8x32_ps(_mm256_sub_ps(acc[c], acc_min[c]), order));
}

AUTOGLM_TARGET_AVX2 void gemv_panels_avx2(const uint8_t * w, int64_t nb, const gemm::q8k_rows & a, float * y, int64_t p0,
                                          int64_t p1) {
    int64_t p = p0;
    for (; p + 2 <= p1; p += 2) gemv_step_avx2<2>(w + p * nb * (int64_t) x8_bytes, nb, a, y + 8 * p);
    if (p < p1) gemv_step_avx2<1>(w + p * nb * (int64_t) x8_bytes, nb, a, y + 8 * p);
}
#    undef AUTOGLM_TARGET_AVX2

// One thread's share: the row quantized into this thread's buffer, then its panels.
void gemv_thread(const uint8_t * w, int64_t n, int64_t k, const float * x, float * y, gemm_isa isa, int ith, int nth) {
    const int64_t n_panels = n / 8;
    const int64_t p0 = n_panels * ith / nth, p1 = n_panels * (ith + 1) / nth;
    if (p0 >= p1) return;
    const gemm::q8k_rows a = gemm::quantize_row_q8_k_for_thread(x, k);
    if (!gemm_isa_has_avx512(isa)) {
        gemv_panels_avx2(w, k / q4_k_block, a, y, p0, p1);
    } else {
        gemv_panels(w, k / q4_k_block, a, y, p0, p1);
    }
}

void gemv_op(ggml_tensor * dst, int ith, int nth, void * user) {
    const auto * w = static_cast<const ggml_tensor *>(user);
    gemv_thread((const uint8_t *) w->data, w->ne[1], w->ne[0], (const float *) dst->src[0]->data, (float *) dst->data,
                gemm_best_isa(), ith, nth);
}
#endif  // AUTOGLM_GEMM_X86

}  // namespace

bool gemv_q4_k_applies(const ggml_tensor * w, const ggml_tensor * x) {
#if AUTOGLM_GEMM_X86
    return gemm::repacked_gemv_operands(w, x, GGML_TYPE_Q4_K) && gemm_available();
#else
    (void) w, (void) x;
    return false;
#endif
}

ggml_tensor * gemv_q4_k_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
#if AUTOGLM_GEMM_X86
    if (gemv_q4_k_applies(w, x)) return gemm::repacked_gemv_node(ctx, w, x, gemv_op, node_name);
#endif
    return ggml_mul_mat(ctx, w, x);
}

void repack_q4_kx8(const uint8_t * gguf, int64_t n, int64_t k, uint8_t * out) {
    if (n % 8 != 0 || k % q4_k_block != 0) throw invalid_argument("repack_q4_kx8: N must be a multiple of 8, K of 256");
    const int64_t nb = k / q4_k_block;
    for (int64_t p = 0; p < n / 8; ++p) {
        for (int64_t b = 0; b < nb; ++b) {
            uint8_t * x8 = out + (p * nb + b) * x8_bytes;
            uint8_t sc[8][8], mn[8][8];  // [sub-block][row]
            for (int c = 0; c < 8; ++c) {
                const uint8_t * blk = gguf + ((p * 8 + c) * nb + b) * q4_k_block_bytes;
                std::memcpy(x8 + 2 * c, blk, 2);
                std::memcpy(x8 + 16 + 2 * c, blk + 2, 2);
                // the row's own 12 scale bytes hold sub-block j where the repacked ones hold row c
                const sub_block_scales own = unpack_scales(blk + 4);
                for (int j = 0; j < 8; ++j) {
                    sc[j][c] = (uint8_t) (own.sc >> (8 * j));
                    mn[j][c] = (uint8_t) (own.m >> (8 * j));
                }
                for (int i = 0; i < 16; ++i) std::memcpy(x8 + qs_at + 64 * i + 8 * c, blk + 16 + 8 * i, 8);
            }
            for (int j = 0; j < 8; ++j) {  // unpack_scales' packing, inverted
                uint8_t * s = x8 + scales_at + 12 * j;
                for (int c = 0; c < 4; ++c) {
                    s[c] = (uint8_t) (sc[j][c] | (sc[j][c + 4] >> 4) << 6);
                    s[c + 4] = (uint8_t) (mn[j][c] | (mn[j][c + 4] >> 4) << 6);
                    s[c + 8] = (uint8_t) ((sc[j][c + 4] & 0x0F) | (mn[j][c + 4] & 0x0F) << 4);
                }
            }
        }
    }
}

void gemv_q4_k_run(const uint8_t * w_repacked, int64_t n, int64_t k, const float * x, float * y, int n_threads,
                   const char * isa_name) {
    if (n <= 0 || n % 8 != 0 || k <= 0 || k % q4_k_block != 0) {
        throw invalid_argument("gemv q4_K: N must be a positive multiple of 8 and K of 256 (got N " + std::to_string(n) + ", K " +
                               std::to_string(k) + ")");
    }
    if (!gemm_available()) throw error("gemv q4_K: this CPU lacks AVX2/FMA/F16C");
    const gemm_isa isa = gemm_isa_by_name(isa_name);
#if AUTOGLM_GEMM_X86
    gemm::on_threads(n_threads, [&](int t, int nt) { gemv_thread(w_repacked, n, k, x, y, isa, t, nt); });
#else
    (void) w_repacked, (void) x, (void) y, (void) n_threads, (void) isa;
#endif
}

bool gemv_q4_k_node_info(const ggml_tensor * t, const char ** family, double * ops, double * bytes) {
    if (!gemm::is_custom_op(t, AUTOGLM_GEMM_FN(gemv_op))) return false;
    const double k = (double) t->src[0]->ne[0], n = (double) t->ne[0];
    *family = "GEMV q4_K (ours)";
    *ops = 2.0 * k * n;
    *bytes = n * (k / q4_k_block) * (double) q4_k_block_bytes;
    return true;
}

}  // namespace autoglm
