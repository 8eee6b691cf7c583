// ref: ggml-common.h block_q6_K and ggml-quants.c dequantize_row_q6_K (the layout: ql, qh, scales, d);
//      ggml-cpu quants.c ggml_vec_dot_q6_K_q8_K (the arithmetic: integer sums scaled per sub-block of
//      16, the -32 offset as 32 x the activations' sub-block sums).
#include "gemv_q6_k.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "gemm.h"
#include "gemm_panel.h"
#include "gemm_q6_k.h"
#include "gemv_host.h"

#if AUTOGLM_GEMM_X86
#    include "avx2_reduce.h"
#    include "avx512_reduce.h"
#    include "gemm_q8k_act.h"
#endif

namespace autoglm {

namespace {

constexpr int block = q6_k_block;
constexpr size_t block_bytes = q6_k_block_bytes;
constexpr size_t qh_at = q6_k_qh_at, scales_at = q6_k_scales_at, d_at = q6_k_d_at;
constexpr int sub_blocks = 16;  // of 16 weights, one int8 scale each
constexpr int group = 8;        // rows per step
constexpr const char * node_name = "gemv_q6_K";

#if AUTOGLM_GEMM_X86
// One token's activations: Q8_K (q, d per 256) and, for the AVX2 kernel, the sums of q per sub-block
// of 16 (the offset's share), in this thread's buffers.
struct activations {
    const int8_t * q;
    const float * d;
    const int16_t * sums16;
};

__attribute__((target("avx2"))) inline void sums_of_16(const int8_t * q, int64_t k, int16_t * out) {
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int64_t i = 0; i < k; i += 32) {
        // sums of 4, then of 16: lane 0 of each 128-bit half
        __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i *) (q + i))), ones16);
        s = _mm256_hadd_epi32(s, s);
        s = _mm256_hadd_epi32(s, s);
        out[i / 16] = (int16_t) _mm256_extract_epi32(s, 0);
        out[i / 16 + 1] = (int16_t) _mm256_extract_epi32(s, 4);
    }
}

inline activations quantize_for_thread(const float * x, int64_t k, bool with_sums) {
    const gemm::q8k_rows a = gemm::quantize_row_q8_k_for_thread(x, k);
    thread_local std::vector<int16_t> sums;
    if (!with_sums) return {a.q(0), a.d(0), nullptr};
    sums.resize((size_t) (k / 16));
    sums_of_16(a.q(0), k, sums.data());
    return {a.q(0), a.d(0), sums.data()};
}

// The 8 rows' super-block sums at byte `off` of each row, against activations q (256) with sub-block
// sums s16 (16): sum_j sc[j] (sum_{k in j} q[k] u[k] - 32 s16[j]), u = w + 32 in 0..63.
//
// Each vpdpbusd lane sums 4 products, and starting it from -32 x the sum of its 4 activations makes
// that q (u - 32): |lane| <= 4 x 32 x 128, int16. So the lanes of two vectors pack into one of int16
// (vpackssdw, exact), and one vpmaddwd applies the scales of both: 128-bit lane i of vector m is
// sub-block 4m + i, and after the pack lane i holds sub-blocks i and 4 + i (or 8 + i and 12 + i).
AUTOGLM_TARGET_AVX512_VNNI inline __m256i group_sums_vnni(const uint8_t * const rows[group], size_t off, const int8_t * q,
                                                          const int16_t *) {
    const __m512i low = _mm512_set1_epi8(0x0F), bits45 = _mm512_set1_epi8(0x30);
    // elements 128n .. 128n+63 are ql's low nibbles with qh's bits 0-1 (first 32) and 2-3 (next 32);
    // 128n+64 .. 128n+127 ql's high nibbles with bits 4-5 and 6-7: per 256-bit half, qh shifted so
    // that its pair lands in bits 4-5
    const __m512i up = _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2), down = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
    constexpr int or_low = 0xEC;  // vpternlogd: (a & c) | b
    // int16 lanes 8i .. 8i+3 of the packed sums are sub-block i (+ 8 for the second pack), 8i+4 ..
    // 8i+7 sub-block 4 + i (+ 8): their scales, from the 16 as int16
    const __m512i pick =
        _mm512_set_epi16(7, 7, 7, 7, 3, 3, 3, 3, 6, 6, 6, 6, 2, 2, 2, 2, 5, 5, 5, 5, 1, 1, 1, 1, 4, 4, 4, 4, 0, 0, 0, 0);
    const __m512i pick_hi = _mm512_add_epi16(pick, _mm512_set1_epi16(8));
    __m512i a[4], start[4];
    for (int m = 0; m < 4; ++m) {
        a[m] = _mm512_loadu_si512(q + 64 * m);
        start[m] =
            _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(32), a[m]));
    }
    __m512i d[group];
    for (int r = 0; r < group; ++r) {
        const uint8_t * blk = rows[r] + off;
        const __m512i sc = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) (blk + scales_at))));
        __m512i dots[4];  // vector m: elements 64m .. 64m+63
        for (int n = 0; n < 2; ++n) {
            const __m512i ql = _mm512_loadu_si512(blk + 64 * n);
            const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *) (blk + qh_at + 32 * n)));
            const __m512i u01 = _mm512_ternarylogic_epi32(ql, _mm512_and_si512(_mm512_sllv_epi64(qh, up), bits45), low, or_low);
            const __m512i u23 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(ql, 4),
                                                          _mm512_and_si512(_mm512_srlv_epi64(qh, down), bits45), low, or_low);
            dots[2 * n] = _mm512_dpbusd_epi32(start[2 * n], u01, a[2 * n]);
            dots[2 * n + 1] = _mm512_dpbusd_epi32(start[2 * n + 1], u23, a[2 * n + 1]);
        }
        const __m512i lo = _mm512_madd_epi16(_mm512_packs_epi32(dots[0], dots[1]), _mm512_permutexvar_epi16(pick, sc));
        const __m512i hi = _mm512_madd_epi16(_mm512_packs_epi32(dots[2], dots[3]), _mm512_permutexvar_epi16(pick_hi, sc));
        d[r] = _mm512_add_epi32(lo, hi);
    }
    // rows in pairs, then 512-bit unpacks (vphaddd costs 3 uops on Zen 4)
    const __m512i z[4] = {avx512::fold_row_pair(d[0], d[1]), avx512::fold_row_pair(d[2], d[3]), avx512::fold_row_pair(d[4], d[5]),
                          avx512::fold_row_pair(d[6], d[7])};
    return avx512::hsum_row_pairs(z);
}

#    define AUTOGLM_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))

// The AVX2 form: vpmaddubsw on u x q (pairs of <= 63 x 127, exact), then vpmaddwd by the scales of
// the vector's two sub-blocks (int16 lanes 0-7 the first, 8-15 the second).
AUTOGLM_TARGET_AVX2 inline __m256i group_sums_avx2(const uint8_t * const rows[group], size_t off, const int8_t * q,
                                                   const int16_t * s16) {
    const __m256i low = _mm256_set1_epi8(0x0F), bits45 = _mm256_set1_epi8(0x30);
    // vpshufb control: int16 lanes 0-7 take scale 2i of the 8 in a 128-bit lane, lanes 8-15 scale 2i + 1
    const __m256i pairs =
        _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    __m256i a[8];
    for (int v = 0; v < 8; ++v) a[v] = _mm256_loadu_si256((const __m256i *) (q + 32 * v));
    const __m256i sums16 = _mm256_loadu_si256((const __m256i *) s16);
    __m256i d[group];
    for (int r = 0; r < group; ++r) {
        const uint8_t * blk = rows[r] + off;
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) (blk + scales_at)));
        __m256i acc = _mm256_setzero_si256();
        for (int n = 0; n < 2; ++n) {
            const __m256i sc8 = _mm256_permute2x128_si256(sc16, sc16, n == 0 ? 0x00 : 0x11);  // sub-blocks 8n .. 8n+7
            const __m256i l0 = _mm256_loadu_si256((const __m256i *) (blk + 64 * n));
            const __m256i l1 = _mm256_loadu_si256((const __m256i *) (blk + 64 * n + 32));
            const __m256i h = _mm256_loadu_si256((const __m256i *) (blk + qh_at + 32 * n));
            const __m256i u[4] = {_mm256_or_si256(_mm256_and_si256(l0, low), _mm256_and_si256(_mm256_slli_epi16(h, 4), bits45)),
                                  _mm256_or_si256(_mm256_and_si256(l1, low), _mm256_and_si256(_mm256_slli_epi16(h, 2), bits45)),
                                  _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low), _mm256_and_si256(h, bits45)),
                                  _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low),
                                                  _mm256_and_si256(_mm256_srli_epi16(h, 2), bits45))};
            for (int i = 0; i < 4; ++i) {
                const __m256i scale = _mm256_shuffle_epi8(sc8, _mm256_add_epi8(pairs, _mm256_set1_epi8((char) (4 * i))));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u[i], a[4 * n + i]), scale));
            }
        }
        d[r] = _mm256_sub_epi32(acc, _mm256_slli_epi32(_mm256_madd_epi16(sc16, sums16), 5));
    }
    return avx2::hsum_rows(d);
}

#    define GEMV_ROWS       gemv_rows_avx2
#    define GEMV_TARGET     AUTOGLM_TARGET_AVX2
#    define GEMV_GROUP_SUMS group_sums_avx2
#    include "gemv_q6_k_rows.inc"
#    undef GEMV_ROWS
#    undef GEMV_TARGET
#    undef GEMV_GROUP_SUMS
#    define GEMV_ROWS       gemv_rows_vnni
#    define GEMV_TARGET     AUTOGLM_TARGET_AVX512_VNNI
#    define GEMV_GROUP_SUMS group_sums_vnni
#    include "gemv_q6_k_rows.inc"
#    undef GEMV_ROWS
#    undef GEMV_TARGET
#    undef GEMV_GROUP_SUMS
#    undef AUTOGLM_TARGET_AVX2

// One thread's share: the row quantized into this thread's buffers, then its groups of rows.
void gemv_thread(const uint8_t * w, int64_t n, int64_t k, const float * x, float * y, gemm_isa isa, int ith, int nth) {
    int64_t r0, r1;
    gemm::group_share(n, group, ith, nth, r0, r1);
    if (r0 >= r1) return;
    const activations a = quantize_for_thread(x, k, !gemm_isa_has_avx512(isa));
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

bool gemv_q6_k_applies(const ggml_tensor * w, const ggml_tensor * x) {
#if AUTOGLM_GEMM_X86
    return w->type == GGML_TYPE_Q6_K && gemm::host_gemv_operands(w, x) && gemm_available();
#else
    (void) w, (void) x;
    return false;
#endif
}

ggml_tensor * gemv_q6_k_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
#if AUTOGLM_GEMM_X86
    if (gemv_q6_k_applies(w, x)) return gemm::host_gemv_node(ctx, w, x, gemv_op, node_name);
#endif
    return ggml_mul_mat(ctx, w, x);
}

void gemv_q6_k_run(const uint8_t * w, int64_t n, int64_t k, const float * x, float * y, int n_threads, const char * isa_name) {
    gemm::run_host_gemv("gemv q6_K", n, k, block, n_threads, isa_name, [&](gemm_isa isa, int t, int nt) {
#if AUTOGLM_GEMM_X86
        gemv_thread(w, n, k, x, y, isa, t, nt);
#else
        (void) w, (void) x, (void) y, (void) isa, (void) t, (void) nt;
#endif
    });
}

bool gemv_q6_k_node_info(const ggml_tensor * t, const char ** family, double * ops, double * bytes) {
    return gemm::host_gemv_node_info(t, AUTOGLM_GEMM_FN(gemv_op), "GEMV q6_K (ours)", family, ops, bytes);
}

}  // namespace autoglm
