// ref: ggml-cpu quants.c ggml_vec_dot_q4_0_q8_0 (the arithmetic: int8 dots per 32-block, scaled by
//      both blocks' scales); ggml-cpu repack.cpp block_q4_0x8 (the weights' layout).
#include "gemv_q4_0.h"

#include <cstring>
#include <string>

#include "error.h"
#include "gemm.h"
#include "gemm_panel.h"
#include "gemm_q4_0.h"

#if AUTOGLM_GEMM_X86
#    include "gemm_q8_act.h"
#endif

namespace autoglm {

namespace {

constexpr size_t x8_bytes = 8 * 2 + 8 * 16;  // one block_q4_0x8: 8 F16 scales, 128 nibble bytes
constexpr const char * node_name = "gemv_q4_0";

#if AUTOGLM_GEMM_X86
// The int32 dot products of one block_q4_0x8 with a block of activations, per column c in lanes 2c
// and 2c + 1 (the first 4 and last 4 of the column's 8 bytes in a chunk), the offset's share (corr)
// in the even lanes. Chunk layout: bytes x[16 + 8c ..] hold k = 0..7 (low nibbles) and 16..23 (high)
// of column c, x[80 + 8c ..] k = 8..15 and 24..31; each byte is XOR 0x88.
AUTOGLM_TARGET_AVX512_VNNI inline __m512i block_dots(const uint8_t * x, const int8_t * q, int32_t corr) {
    const __m512i lo_mask = _mm512_set1_epi8(0x0F), lo_flip = _mm512_set1_epi8(0x08);
    const __m512i hi_mask = _mm512_set1_epi8((char) 0xF0), hi_flip = _mm512_set1_epi8((char) 0x80);
    constexpr int and_xor = 0x6A;  // vpternlogd: (a & b) ^ c
    const __m512i first = _mm512_loadu_si512(x + 16), second = _mm512_loadu_si512(x + 80);
    // low nibbles as u = w + 8 in 0..15; high nibbles as 16 u (the shift folded into the sum below)
    __m512i lo = _mm512_maskz_set1_epi32(0x5555, corr), hi = _mm512_setzero_si512();
    lo = _mm512_dpbusd_epi32(lo, _mm512_ternarylogic_epi32(first, lo_mask, lo_flip, and_xor), gemm::bcast8_512(q));
    hi = _mm512_dpbusd_epi32(hi, _mm512_ternarylogic_epi32(first, hi_mask, hi_flip, and_xor), gemm::bcast8_512(q + 16));
    lo = _mm512_dpbusd_epi32(lo, _mm512_ternarylogic_epi32(second, lo_mask, lo_flip, and_xor), gemm::bcast8_512(q + 8));
    hi = _mm512_dpbusd_epi32(hi, _mm512_ternarylogic_epi32(second, hi_mask, hi_flip, and_xor), gemm::bcast8_512(q + 24));
    return _mm512_add_epi32(lo, _mm512_srai_epi32(hi, 4));  // exact: hi is a multiple of 16
}

// Panels [p0, p1) of 8 columns: y[8p + c] = sum_b da[b] dw[c][b] (corr[b] + sum_k q[k] u[c][k]).
// Two blocks per step: their column sums joined in one vector (block b in lanes 0-7, b + 1 in 8-15),
// converted and scaled once, then added to the 8 accumulators in block order (the GEMM's F32 chain).
AUTOGLM_TARGET_AVX512_VNNI void gemv_panels(const uint8_t * w, int64_t nb, const gemm::q8_0_rows & a, float * y, int64_t p0,
                                            int64_t p1) {
    // software prefetch (gemm::prefetch_stream): L2 far ahead, L1 near; a thread's panels are contiguous
    constexpr int64_t l2_ahead = 128 * x8_bytes, l1_ahead = 8 * x8_bytes;
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const int8_t * q = a.q(0);
    const float * da = a.d(0);
    const int32_t * corr = a.corr(0);
    for (int64_t p = p0; p < p1; ++p) {
        const uint8_t * panel = w + p * nb * (int64_t) x8_bytes;
        __m256 acc = _mm256_setzero_ps();
        int64_t b = 0;
        for (; b + 2 <= nb; b += 2) {
            const uint8_t * x0 = panel + b * (int64_t) x8_bytes;
            const uint8_t * x1 = x0 + x8_bytes;
            gemm::prefetch_stream(x0, 2 * x8_bytes, l2_ahead, l1_ahead);
            const __m512i s0 = block_dots(x0, q + b * 32, corr[b]), s1 = block_dots(x1, q + b * 32 + 32, corr[b + 1]);
            // lanes 0-7: block b's columns, 8-15: block b + 1's (each the sum of its lane pair)
            const __m512i sums =
                _mm512_add_epi32(_mm512_permutex2var_epi32(s0, even, s1), _mm512_permutex2var_epi32(s0, odd, s1));
            const __m512 dw =
                _mm512_cvtph_ps(_mm256_set_m128i(_mm_loadu_si128((const __m128i *) x1), _mm_loadu_si128((const __m128i *) x0)));
            const __m512 da2 = _mm512_castpd_ps(
                _mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(da[b])), _mm256_castps_pd(_mm256_set1_ps(da[b + 1])), 1));
            const __m512 f = _mm512_cvtepi32_ps(sums), scale = _mm512_mul_ps(dw, da2);
            acc = _mm256_fmadd_ps(_mm512_castps512_ps256(f), _mm512_castps512_ps256(scale), acc);
            acc = _mm256_fmadd_ps(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1)),
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(scale), 1)), acc);
        }
        if (b < nb) {  // an odd block count: the last block alone
            const uint8_t * x0 = panel + b * (int64_t) x8_bytes;
            const __m512i s0 = block_dots(x0, q + b * 32, corr[b]);
            const __m256i sums =
                _mm512_castsi512_si256(_mm512_add_epi32(_mm512_permutexvar_epi32(even, s0), _mm512_permutexvar_epi32(odd, s0)));
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) x0));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dw, _mm256_set1_ps(da[b])), acc);
        }
        _mm256_storeu_ps(y + 8 * p, acc);
    }
}

// The AVX2 form of the same product, 4 columns per 256-bit vector: vpmaddubsw (weights as the unsigned
// operand) and one vpmaddwd per 4 of them, the 16-bit sums exact (8 products of at most 15 x 127).
// One block's column sums in the order 0, 1, 4, 5, 2, 3, 6, 7 (vphaddd's), corr included.
__attribute__((target("avx2,fma,f16c"))) inline __m256i block_dots_avx2(const uint8_t * x, const int8_t * q, int32_t corr) {
    const __m256i nibble = _mm256_set1_epi8(0x0F), flip = _mm256_set1_epi8((char) 0x88), ones = _mm256_set1_epi16(1);
    const __m256i a_lo0 = gemm::bcast8_256(q), a_lo1 = gemm::bcast8_256(q + 8), a_hi0 = gemm::bcast8_256(q + 16),
                  a_hi1 = gemm::bcast8_256(q + 24);
    __m256i half[2];
    for (int h = 0; h < 2; ++h) {  // columns 0-3, then 4-7: chunks h*4 .. h*4+3 and 8+h*4 ..
        const __m256i first = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *) (x + 16 + 32 * h)), flip);
        const __m256i second = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *) (x + 80 + 32 * h)), flip);
        __m256i p = _mm256_maddubs_epi16(_mm256_and_si256(first, nibble), a_lo0);
        p = _mm256_add_epi16(p, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(first, 4), nibble), a_hi0));
        p = _mm256_add_epi16(p, _mm256_maddubs_epi16(_mm256_and_si256(second, nibble), a_lo1));
        p = _mm256_add_epi16(p, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(second, 4), nibble), a_hi1));
        half[h] = _mm256_madd_epi16(p, ones);  // lanes 2c, 2c + 1: column c's two halves
    }
    return _mm256_add_epi32(_mm256_hadd_epi32(half[0], half[1]), _mm256_set1_epi32(corr));
}

__attribute__((target("avx2,fma,f16c"))) void gemv_panels_avx2(const uint8_t * w, int64_t nb, const gemm::q8_0_rows & a,
                                                               float * y, int64_t p0, int64_t p1) {
    constexpr int64_t l2_ahead = 128 * x8_bytes, l1_ahead = 8 * x8_bytes;
    const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);  // vphaddd's column order; its own inverse
    const int8_t * q = a.q(0);
    const float * da = a.d(0);
    const int32_t * corr = a.corr(0);
    for (int64_t p = p0; p < p1; ++p) {
        const uint8_t * panel = w + p * nb * (int64_t) x8_bytes;
        __m256 acc = _mm256_setzero_ps();  // columns in vphaddd's order
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t * x = panel + b * (int64_t) x8_bytes;
            if (b % 2 == 0) gemm::prefetch_stream(x, 2 * x8_bytes, l2_ahead, l1_ahead);
            const __m256i sums = block_dots_avx2(x, q + b * 32, corr[b]);
            const __m256 dw = _mm256_permutevar8x32_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) x)), order);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dw, _mm256_set1_ps(da[b])), acc);
        }
        _mm256_storeu_ps(y + 8 * p, _mm256_permutevar8x32_ps(acc, order));
    }
}

// One thread's share: the row quantized into this thread's buffer, then its panels.
void gemv_thread(const uint8_t * w, int64_t n, int64_t k, const float * x, float * y, gemm_isa isa, int ith, int nth) {
    const int64_t n_panels = n / 8;
    const int64_t p0 = n_panels * ith / nth, p1 = n_panels * (ith + 1) / nth;
    if (p0 >= p1) return;
    const int64_t nb = k / q4_0_block;
    const gemm::q8_0_rows a = gemm::quantize_row_for_thread(x, k, 8);
    if (!gemm_isa_has_avx512(isa)) {
        gemv_panels_avx2(w, nb, a, y, p0, p1);
    } else {
        gemv_panels(w, nb, a, y, p0, p1);
    }
}

void gemv_op(ggml_tensor * dst, int ith, int nth, void * user) {
    const auto * w = static_cast<const ggml_tensor *>(user);
    const ggml_tensor * x = dst->src[0];
    gemv_thread((const uint8_t *) w->data, w->ne[1], w->ne[0], (const float *) x->data, (float *) dst->data, gemm_best_isa(), ith,
                nth);
}
#endif  // AUTOGLM_GEMM_X86

}  // namespace

bool gemv_q4_0_applies(const ggml_tensor * w, const ggml_tensor * x) {
#if AUTOGLM_GEMM_X86
    return gemm::repacked_gemv_operands(w, x, GGML_TYPE_Q4_0) && gemm_available();
#else
    (void) w, (void) x;
    return false;
#endif
}

ggml_tensor * gemv_q4_0_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
#if AUTOGLM_GEMM_X86
    if (gemv_q4_0_applies(w, x)) return gemm::repacked_gemv_node(ctx, w, x, gemv_op, node_name);
#endif
    return ggml_mul_mat(ctx, w, x);
}

void repack_q4_0x8(const uint8_t * gguf, int64_t n, int64_t k, uint8_t * out) {
    if (n % 8 != 0 || k % q4_0_block != 0) throw invalid_argument("repack_q4_0x8: N must be a multiple of 8, K of 32");
    const int64_t nb = k / q4_0_block;
    for (int64_t p = 0; p < n / 8; ++p) {
        for (int64_t b = 0; b < nb; ++b) {
            uint8_t * x8 = out + (p * nb + b) * x8_bytes;
            for (int c = 0; c < 8; ++c) {
                const uint8_t * blk = gguf + ((p * 8 + c) * nb + b) * q4_0_block_bytes;
                std::memcpy(x8 + 2 * c, blk, 2);
                for (int half = 0; half < 2; ++half) {
                    for (int i = 0; i < 8; ++i) x8[16 + 64 * half + 8 * c + i] = blk[2 + 8 * half + i] ^ 0x88;
                }
            }
        }
    }
}

void gemv_q4_0_run(const uint8_t * w_repacked, int64_t n, int64_t k, const float * x, float * y, int n_threads,
                   const char * isa_name) {
    if (n <= 0 || n % 8 != 0 || k <= 0 || k % q4_0_block != 0) {
        throw invalid_argument("gemv q4_0: N must be a positive multiple of 8 and K of 32 (got N " + std::to_string(n) + ", K " +
                               std::to_string(k) + ")");
    }
    if (!gemm_available()) throw error("gemv q4_0: this CPU lacks AVX2/FMA/F16C");
    const gemm_isa isa = gemm_isa_by_name(isa_name);
#if AUTOGLM_GEMM_X86
    gemm::on_threads(n_threads, [&](int t, int nt) { gemv_thread(w_repacked, n, k, x, y, isa, t, nt); });
#else
    (void) w_repacked, (void) x, (void) y, (void) n_threads, (void) isa;
#endif
}

bool gemv_q4_0_node_info(const ggml_tensor * t, const char ** family, double * ops, double * bytes) {
    if (!gemm::is_custom_op(t, AUTOGLM_GEMM_FN(gemv_op))) return false;
    const double k = (double) t->src[0]->ne[0], n = (double) t->ne[0];
    *family = "GEMV q4_0 (ours)";
    *ops = 2.0 * k * n;
    *bytes = n * (k / q4_0_block) * (double) q4_0_block_bytes;
    return true;
}

}  // namespace autoglm
