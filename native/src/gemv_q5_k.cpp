// ref: ggml-common.h block_q5_K and ggml-quants.c dequantize_row_q5_K (the layout: d, dmin, 12 bytes of
//      scales and mins, qh: the 5th bit of sub-block j in bit j, qs: sub-block pair p in bytes 32p ..
//      32p+31, low nibbles first); ggml-cpu quants.c ggml_vec_dot_q5_K_q8_K (the scale unpacking with
//      32-bit masks, and the arithmetic).
#include "gemv_q5_k.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "gemm.h"
#include "gemm_panel.h"
#include "gemm_q5_k.h"
#include "gemv_host.h"

#if AUTOGLM_GEMM_X86
#    include "avx2_reduce.h"
#    include "avx512_reduce.h"
#    include "gemm_q8k_act.h"
#endif

namespace autoglm {

namespace {

constexpr int block = q5_k_block;
constexpr size_t block_bytes = q5_k_block_bytes;
constexpr size_t scales_at = q5_k_scales_at, qh_at = q5_k_qh_at, qs_at = q5_k_qs_at;
constexpr int sub_blocks = 8;  // of 32 weights, a 6-bit scale and min each
constexpr int group = 8;       // rows per step
constexpr const char * node_name = "gemv_q5_K";

#if AUTOGLM_GEMM_X86
// The 8 rows' exact super-block sums (lane r: row r) and their F16 scales in F32.
struct group_sums {
    __m256i isum, msum;
    __m256 d, dmin;
};

// Four rows' 12 bytes of packed scales and mins (bytes 4 .. 15 of each block, one row per 128-bit
// lane: dwords D1, D2, D3) unpacked as ggml's 32-bit masks do, into dwords sc0-3, sc4-7, m0-3, m4-7:
//   sc0-3 = D1 & 0x3F.., sc4-7 = (D3 & 0x0F..) | ((D1 >> 6) & 3) << 4, m0-3 = D2 & 0x3F..,
//   m4-7 = (D3 >> 4 & 0x0F..) | ((D2 >> 6) & 3) << 4.
AUTOGLM_TARGET_AVX512_VNNI inline __m512i unpack_scales_4rows(__m512i v) {
    const __m512i x =
        _mm512_srlv_epi32(_mm512_shuffle_epi32(v, _MM_PERM_DCDB), _mm512_setr4_epi32(0, 0, 0, 4));  // D1 D3 D2 D3>>4
    const __m512i y = _mm512_shuffle_epi32(v, _MM_PERM_CCBB);  // D1 D1 D2 D2
    const __m512i top = _mm512_and_si512(_mm512_srli_epi32(y, 2), _mm512_setr4_epi32(0, 0x30303030, 0, 0x30303030));
    constexpr int or_low = 0xEC;  // vpternlogd: (a & c) | b
    return _mm512_ternarylogic_epi32(x, top, _mm512_setr4_epi32(0x3F3F3F3F, 0x0F0F0F0F, 0x3F3F3F3F, 0x0F0F0F0F), or_low);
}

AUTOGLM_TARGET_AVX512_VNNI inline __m512i join256(const int8_t * lo, const int8_t * hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *) lo)),
                              _mm256_loadu_si256((const __m256i *) hi), 1);
}

// VNNI: per row four vpdpbusd, each on two sub-blocks (one per 256-bit half: 0 | 2, 1 | 3, 4 | 6,
// 5 | 7, the activations arranged to match once per super-block). A lane sums 4 products of
// <= 31 x 127, within int16, so two vectors pack (vpackssdw, exact) and one vpmaddwd applies their four
// sub-blocks' scales (picked per row from the unpacked ones by vpermw).
AUTOGLM_TARGET_AVX512_VNNI inline group_sums group_sums_vnni(const uint8_t * const rows[group], size_t off, const int8_t * q,
                                                             const int16_t * s8) {
    const __m512i a[4] = {join256(q, q + 64), join256(q + 32, q + 96), join256(q + 128, q + 192), join256(q + 160, q + 224)};
    // the 5th bits: bit j of qh moved to bit 4 for sub-block j, per 256-bit half
    const __m512i up0 = _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2), up1 = _mm512_setr_epi64(3, 3, 3, 3, 1, 1, 1, 1);
    const __m512i down2 = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2), down3 = _mm512_setr_epi64(1, 1, 1, 1, 3, 3, 3, 3);
    const __m512i low = _mm512_set1_epi8(0x0F), bit4 = _mm512_set1_epi8(0x10);
    constexpr int or_low = 0xEC;  // (a & c) | b
    // int16 lanes of a pack of dots (d0, d1): 128-bit lanes 0-1 hold sub-blocks 0 (4 lanes) and 1 (4),
    // lanes 2-3 sub-blocks 2 and 3; of (d2, d3): 4, 5 and 6, 7. Their scales' indexes, for the row in
    // 128-bit lane 0 of the unpacked scales (+ 8 per lane)
    alignas(64) static const int16_t pick01[32] = {0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1,
                                                   2, 2, 2, 2, 3, 3, 3, 3, 2, 2, 2, 2, 3, 3, 3, 3};
    const __m512i pick_lo = _mm512_load_si512(pick01), pick_hi = _mm512_add_epi16(pick_lo, _mm512_set1_epi16(4));

    __m512i heads[2], sc16[2], mins[2];  // rows 4h .. 4h+3, one per 128-bit lane
    for (int h = 0; h < 2; ++h) {
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *) (rows[4 * h] + off)));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *) (rows[4 * h + 1] + off)), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *) (rows[4 * h + 2] + off)), 2);
        heads[h] = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *) (rows[4 * h + 3] + off)), 3);
        const __m512i scales = unpack_scales_4rows(heads[h]);
        sc16[h] = _mm512_unpacklo_epi8(scales, _mm512_setzero_si512());  // sc0..7 as int16
        mins[h] = _mm512_madd_epi16(_mm512_unpackhi_epi8(scales, _mm512_setzero_si512()),
                                    _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *) s8)));
    }
    // msum: each row's 4 lanes of mins, summed; 128-bit lane L then holds row L in dword 0, 4 + L in 1
    const __m512i t = _mm512_add_epi32(_mm512_unpacklo_epi32(mins[0], mins[1]), _mm512_unpackhi_epi32(mins[0], mins[1]));
    const __m512i u = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_BADC));
    group_sums out;
    out.msum =
        _mm512_castsi512_si256(_mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0), u));
    // d | dmin << 16 of rows 0..7
    const __m256i dd = _mm512_castsi512_si256(
        _mm512_permutex2var_epi32(heads[0], _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0), heads[1]));
    out.d = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(dd));
    out.dmin = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32(dd, 16)));

    __m512i z[group];
    for (int r = 0; r < group; ++r) {
        const uint8_t * blk = rows[r] + off;
        const __m512i qs0 = _mm512_loadu_si512(blk + qs_at), qs1 = _mm512_loadu_si512(blk + qs_at + 64);
        const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *) (blk + qh_at)));
        const __m512i u0 = _mm512_ternarylogic_epi32(qs0, _mm512_and_si512(_mm512_sllv_epi64(qh, up0), bit4), low, or_low);
        const __m512i u1 =
            _mm512_ternarylogic_epi32(_mm512_srli_epi64(qs0, 4), _mm512_and_si512(_mm512_sllv_epi64(qh, up1), bit4), low, or_low);
        const __m512i u2 = _mm512_ternarylogic_epi32(qs1, _mm512_and_si512(_mm512_srlv_epi64(qh, down2), bit4), low, or_low);
        const __m512i u3 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(qs1, 4),
                                                     _mm512_and_si512(_mm512_srlv_epi64(qh, down3), bit4), low, or_low);
        const __m512i zero = _mm512_setzero_si512();
        const __m512i p01 = _mm512_packs_epi32(_mm512_dpbusd_epi32(zero, u0, a[0]), _mm512_dpbusd_epi32(zero, u1, a[1]));
        const __m512i p23 = _mm512_packs_epi32(_mm512_dpbusd_epi32(zero, u2, a[2]), _mm512_dpbusd_epi32(zero, u3, a[3]));
        const __m512i lane = _mm512_set1_epi16((short) (8 * (r % 4)));
        const __m512i sc = sc16[r / 4];
        z[r] = _mm512_add_epi32(_mm512_madd_epi16(p01, _mm512_permutexvar_epi16(_mm512_add_epi16(pick_lo, lane), sc)),
                                _mm512_madd_epi16(p23, _mm512_permutexvar_epi16(_mm512_add_epi16(pick_hi, lane), sc)));
    }
    const __m512i pairs[4] = {avx512::fold_row_pair(z[0], z[1]), avx512::fold_row_pair(z[2], z[3]),
                              avx512::fold_row_pair(z[4], z[5]), avx512::fold_row_pair(z[6], z[7])};
    out.isum = avx512::hsum_row_pairs(pairs);
    return out;
}

#    define AUTOGLM_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))

// Bit j of each byte of h moved to bit 4 (other bits arbitrary): 16-bit shifts by at most 4 left or 3
// right keep bit 4 of each byte within its own byte.
AUTOGLM_TARGET_AVX2 inline __m256i bit_to_4(__m256i h, int j) {
    return j <= 4 ? _mm256_slli_epi16(h, 4 - j) : _mm256_srli_epi16(h, j - 4);
}

// AVX2: per sub-block one vpmaddubsw (pairs of <= 31 x 127) and one vpmaddwd by its scale (vpshufb
// spreads it); the scales and mins unpacked per row as ggml does, the mins' dot product by vpmaddwd.
AUTOGLM_TARGET_AVX2 inline group_sums group_sums_avx2(const uint8_t * const rows[group], size_t off, const int8_t * q,
                                                      const int16_t * s8) {
    const __m256i low = _mm256_set1_epi8(0x0F), bit4 = _mm256_set1_epi8(0x10);
    const __m128i sums = _mm_loadu_si128((const __m128i *) s8);
    __m256i d[group], m[group];
    uint16_t hd[group], hm[group];
    for (int r = 0; r < group; ++r) {
        const uint8_t * blk = rows[r] + off;
        std::memcpy(&hd[r], blk, 2);
        std::memcpy(&hm[r], blk + 2, 2);
        uint32_t s[3];
        std::memcpy(s, blk + scales_at, 12);
        const uint32_t sc_lo = s[0] & 0x3F3F3F3F, m_lo = s[1] & 0x3F3F3F3F;
        const uint32_t sc_hi = (s[2] & 0x0F0F0F0F) | ((s[0] >> 2) & 0x30303030);
        const uint32_t m_hi = ((s[2] >> 4) & 0x0F0F0F0F) | ((s[1] >> 2) & 0x30303030);
        const __m256i sm = _mm256_cvtepu8_epi16(_mm_setr_epi32((int) sc_lo, (int) sc_hi, (int) m_lo, (int) m_hi));
        m[r] = _mm256_zextsi128_si256(_mm_madd_epi16(_mm256_extracti128_si256(sm, 1), sums));
        const __m256i sc = _mm256_permute2x128_si256(sm, sm, 0x00);  // sc0..7 in both halves
        const __m256i qh = _mm256_loadu_si256((const __m256i *) (blk + qh_at));
        __m256i acc = _mm256_setzero_si256();
        for (int p = 0; p < sub_blocks / 2; ++p) {
            const __m256i qs = _mm256_loadu_si256((const __m256i *) (blk + qs_at + 32 * p));
            const __m256i lo = _mm256_or_si256(_mm256_and_si256(qs, low), _mm256_and_si256(bit_to_4(qh, 2 * p), bit4));
            const __m256i hi =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qs, 4), low), _mm256_and_si256(bit_to_4(qh, 2 * p + 1), bit4));
            const __m256i sc_lo16 = _mm256_shuffle_epi8(sc, _mm256_set1_epi16((short) (4 * p | (4 * p + 1) << 8)));
            const __m256i sc_hi16 = _mm256_shuffle_epi8(sc, _mm256_set1_epi16((short) ((4 * p + 2) | (4 * p + 3) << 8)));
            const __m256i a_lo = _mm256_loadu_si256((const __m256i *) (q + 64 * p));
            const __m256i a_hi = _mm256_loadu_si256((const __m256i *) (q + 64 * p + 32));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a_lo), sc_lo16));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a_hi), sc_hi16));
        }
        d[r] = acc;
    }
    return {avx2::hsum_rows(d), avx2::hsum_rows(m), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) hd)),
            _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) hm))};
}

#    define GEMV_ROWS       gemv_rows_avx2
#    define GEMV_TARGET     AUTOGLM_TARGET_AVX2
#    define GEMV_GROUP_SUMS group_sums_avx2
#    include "gemv_q5_k_rows.inc"
#    undef GEMV_ROWS
#    undef GEMV_TARGET
#    undef GEMV_GROUP_SUMS
#    define GEMV_ROWS       gemv_rows_vnni
#    define GEMV_TARGET     AUTOGLM_TARGET_AVX512_VNNI
#    define GEMV_GROUP_SUMS group_sums_vnni
#    include "gemv_q5_k_rows.inc"
#    undef GEMV_ROWS
#    undef GEMV_TARGET
#    undef GEMV_GROUP_SUMS
#    undef AUTOGLM_TARGET_AVX2

// One thread's share: the row quantized into this thread's buffer, then its groups of rows.
void gemv_thread(const uint8_t * w, int64_t n, int64_t k, const float * x, float * y, gemm_isa isa, int ith, int nth) {
    int64_t r0, r1;
    gemm::group_share(n, group, ith, nth, r0, r1);
    if (r0 >= r1) return;
    const gemm::q8k_rows a = gemm::quantize_row_q8_k_for_thread(x, k);
    if (!gemm_isa_has_avx512(isa)) {
        gemv_rows_avx2(w, k / block, a, y, r0, r1);
    } else {
        gemv_rows_vnni(w, k / block, a, y, r0, r1);
    }
}

void gemv_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * w = dst->src[0];
    gemv_thread((const uint8_t *) w->data, w->ne[1], w->ne[0], (const float *) dst->src[1]->data, (float *) dst->data,
                gemm_best_isa(), ith, nth);
}
#endif  // AUTOGLM_GEMM_X86

}  // namespace

bool gemv_q5_k_applies(const ggml_tensor * w, const ggml_tensor * x) {
#if AUTOGLM_GEMM_X86
    return w->type == GGML_TYPE_Q5_K && gemm::host_gemv_operands(w, x) && gemm_available();
#else
    (void) w, (void) x;
    return false;
#endif
}

ggml_tensor * gemv_q5_k_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
#if AUTOGLM_GEMM_X86
    if (gemv_q5_k_applies(w, x)) return gemm::host_gemv_node(ctx, w, x, gemv_op, node_name);
#endif
    return ggml_mul_mat(ctx, w, x);
}

void gemv_q5_k_run(const uint8_t * w, int64_t n, int64_t k, const float * x, float * y, int n_threads, const char * isa_name) {
    gemm::run_host_gemv("gemv q5_K", n, k, block, n_threads, isa_name, [&](gemm_isa isa, int t, int nt) {
#if AUTOGLM_GEMM_X86
        gemv_thread(w, n, k, x, y, isa, t, nt);
#else
        (void) w, (void) x, (void) y, (void) isa, (void) t, (void) nt;
#endif
    });
}

bool gemv_q5_k_node_info(const ggml_tensor * t, const char ** family, double * ops, double * bytes) {
    return gemm::host_gemv_node_info(t, AUTOGLM_GEMM_FN(gemv_op), "GEMV q5_K (ours)", family, ops, bytes);
}

}  // namespace autoglm
