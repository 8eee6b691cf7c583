// ref: ggml-cpu quants.c ggml_vec_dot_q5_0_q8_0, ggml_vec_dot_q5_1_q8_1, ggml_vec_dot_q4_1_q8_1 (the
//      arithmetic: an exact int8 dot product per 32-block scaled by both blocks' scales, plus the
//      affine types' m times the activations' sum); block32_x16.h (the layout).
#include "gemv_block32_x16.h"

#include <string>

#include "block32_x16.h"
#include "error.h"
#include "gemm.h"
#include "gemm_panel.h"
#include "gemv_host.h"

#if AUTOGLM_GEMM_X86
#    include "gemm_block32.h"
#endif

namespace autoglm {

namespace {

constexpr int block = 32;

struct type_names {
    ggml_type type;
    const char * node_name;
    const char * family;
};
constexpr type_names names[] = {
    {GGML_TYPE_Q5_0, "gemv_x16_q5_0", "GEMV q5_0 x16 (ours)"},
    {GGML_TYPE_Q5_1, "gemv_x16_q5_1", "GEMV q5_1 x16 (ours)"},
    {GGML_TYPE_Q4_1, "gemv_x16_q4_1", "GEMV q4_1 x16 (ours)"},
};
const type_names * names_of(ggml_type t) {
    for (const type_names & n : names) {
        if (n.type == t) return &n;
    }
    return nullptr;
}

#if AUTOGLM_GEMM_X86
// The affine types (w = d u + m) have offsets m, the 5-bit ones masks.
template <ggml_type T>
constexpr bool affine = x16_layout_of(T)->m_at != 0;
template <ggml_type T>
constexpr bool five_bits = x16_layout_of(T)->masks_at != 0;
// software prefetch (gemm::prefetch_stream): a thread's records are one contiguous run
constexpr int64_t l2_ahead = 8192, l1_ahead = 1024;

// Groups [g0, g1) of 16 rows: y[16g + r] = sum_b da[b] dw[r][b] (corr[b] + sum_k q[k] u[r][k]) (+ mw[r][b] da[b] corr[b]).
template <ggml_type T>
AUTOGLM_TARGET_AVX512_VNNI void rows_vnni(const uint8_t * w, int64_t nb, const gemm::q8_0_rows & a, float * y, int64_t g0,
                                          int64_t g1) {
    constexpr x16_layout l = *x16_layout_of(T);
    const __m512i low = _mm512_set1_epi8(0x0F), sixteen = _mm512_set1_epi8(16);
    const int8_t * q = a.q(0);
    const float * da = a.d(0);
    const int32_t * corr = a.corr(0);
    for (int64_t g = g0; g < g1; ++g) {
        const uint8_t * rec = w + (size_t) (g * nb) * l.record_bytes;
        __m512 acc = _mm512_setzero_ps();  // lane r: row 16g + r
        for (int64_t b = 0; b < nb; ++b, rec += l.record_bytes) {
            gemm::prefetch_stream(rec, (int64_t) l.record_bytes, l2_ahead, l1_ahead);
            const int8_t * qb = q + b * block;
            __m512i s = affine<T> ? _mm512_setzero_si512() : _mm512_set1_epi32(corr[b]);
            for (int c = 0; c < 4; ++c) {
                const __m512i qs = _mm512_loadu_si512(rec + l.qs_at + 64 * c);
                __m512i lo = _mm512_and_si512(qs, low), hi = _mm512_and_si512(_mm512_srli_epi16(qs, 4), low);
                if constexpr (five_bits<T>) {
                    __mmask64 m_lo, m_hi;
                    __builtin_memcpy(&m_lo, rec + l.masks_at + 16 * c, 8);
                    __builtin_memcpy(&m_hi, rec + l.masks_at + 16 * c + 8, 8);
                    lo = _mm512_mask_add_epi8(lo, m_lo, lo, sixteen);
                    hi = _mm512_mask_add_epi8(hi, m_hi, hi, sixteen);
                }
                int32_t a_lo, a_hi;
                __builtin_memcpy(&a_lo, qb + 4 * c, 4);
                __builtin_memcpy(&a_hi, qb + 16 + 4 * c, 4);
                s = _mm512_dpbusd_epi32(s, lo, _mm512_set1_epi32(a_lo));
                s = _mm512_dpbusd_epi32(s, hi, _mm512_set1_epi32(a_hi));
            }
            const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) rec));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(da[b])), acc);
            if constexpr (affine<T>) {  // as gemm_block32.h's affine_row_scale
                const __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) (rec + l.m_at)));
                acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(da[b] * (float) corr[b]), acc);
            }
        }
        _mm512_storeu_ps(y + g * x16_rows, acc);
    }
}

#    define AUTOGLM_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))

// The same on AVX2, each group as two halves of 8 rows: vpmaddubsw pairs (<= 2 x 31 x 127) summed over a
// block's four chunks in int16 (<= 31,496), then vpmaddwd widens them.
template <ggml_type T>
AUTOGLM_TARGET_AVX2 void rows_avx2(const uint8_t * w, int64_t nb, const gemm::q8_0_rows & a, float * y, int64_t g0, int64_t g1) {
    constexpr x16_layout l = *x16_layout_of(T);
    const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const int8_t * q = a.q(0);
    const float * da = a.d(0);
    const int32_t * corr = a.corr(0);
    for (int64_t g = g0; g < g1; ++g) {
        const uint8_t * rec = w + (size_t) (g * nb) * l.record_bytes;
        __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};  // rows 16g + 8h + r
        for (int64_t b = 0; b < nb; ++b, rec += l.record_bytes) {
            gemm::prefetch_stream(rec, (int64_t) l.record_bytes, l2_ahead, l1_ahead);
            const int8_t * qb = q + b * block;
            for (int h = 0; h < 2; ++h) {
                __m256i p_lo = _mm256_setzero_si256(), p_hi = _mm256_setzero_si256();
                for (int c = 0; c < 4; ++c) {
                    const __m256i qs = _mm256_loadu_si256((const __m256i *) (rec + l.qs_at + 64 * c + 32 * h));
                    __m256i lo = _mm256_and_si256(qs, low), hi = _mm256_and_si256(_mm256_srli_epi16(qs, 4), low);
                    if constexpr (five_bits<T>) {
                        lo = _mm256_or_si256(lo, gemm::fifth_bits(rec + l.masks_at + 16 * c + 4 * h));
                        hi = _mm256_or_si256(hi, gemm::fifth_bits(rec + l.masks_at + 16 * c + 8 + 4 * h));
                    }
                    int32_t a_lo, a_hi;
                    __builtin_memcpy(&a_lo, qb + 4 * c, 4);
                    __builtin_memcpy(&a_hi, qb + 16 + 4 * c, 4);
                    p_lo = _mm256_add_epi16(p_lo, _mm256_maddubs_epi16(lo, _mm256_set1_epi32(a_lo)));
                    p_hi = _mm256_add_epi16(p_hi, _mm256_maddubs_epi16(hi, _mm256_set1_epi32(a_hi)));
                }
                __m256i s = _mm256_add_epi32(_mm256_madd_epi16(p_lo, ones), _mm256_madd_epi16(p_hi, ones));
                if constexpr (!affine<T>) s = _mm256_add_epi32(s, _mm256_set1_epi32(corr[b]));
                const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (rec + 16 * h)));
                acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(da[b])), acc[h]);
                if constexpr (affine<T>) {
                    const __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (rec + l.m_at + 16 * h)));
                    acc[h] = _mm256_fmadd_ps(mw, _mm256_set1_ps(da[b] * (float) corr[b]), acc[h]);
                }
            }
        }
        _mm256_storeu_ps(y + g * x16_rows, acc[0]);
        _mm256_storeu_ps(y + g * x16_rows + 8, acc[1]);
    }
}
#    undef AUTOGLM_TARGET_AVX2

using rows_fn = void (*)(const uint8_t *, int64_t, const gemm::q8_0_rows &, float *, int64_t, int64_t);
rows_fn rows_for(ggml_type t, gemm_isa isa) {
    const bool vnni = gemm_isa_has_avx512(isa);
    switch (t) {
        case GGML_TYPE_Q5_0: return vnni ? rows_vnni<GGML_TYPE_Q5_0> : rows_avx2<GGML_TYPE_Q5_0>;
        case GGML_TYPE_Q5_1: return vnni ? rows_vnni<GGML_TYPE_Q5_1> : rows_avx2<GGML_TYPE_Q5_1>;
        default: return vnni ? rows_vnni<GGML_TYPE_Q4_1> : rows_avx2<GGML_TYPE_Q4_1>;
    }
}

// One thread's share for each of the m activation rows (x: m rows of k, y: m rows of n): the row quantized
// into this thread's buffer, then its groups of 16 weight rows.
void gemv_thread(ggml_type t, const uint8_t * w, int64_t n, int64_t k, const float * x, int64_t m, float * y, gemm_isa isa,
                 int ith, int nth) {
    int64_t r0, r1;
    gemm::group_share(n, x16_rows, ith, nth, r0, r1);
    if (r0 >= r1) return;
    // the activations as for u = w + 16 (Q5_0), or with sum(q) in corr for the affine types' m (offset -1)
    const int offset = x16_layout_of(t)->m_at ? -1 : 16;
    const rows_fn rows = rows_for(t, isa);
    for (int64_t j = 0; j < m; ++j) {
        rows(w, k / block, gemm::quantize_row_for_thread(x + j * k, k, offset), y + j * n, r0 / x16_rows, r1 / x16_rows);
    }
}

void gemv_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor *w = dst->src[0], *x = dst->src[1];
    gemv_thread(w->type, (const uint8_t *) w->data, w->ne[1], w->ne[0], (const float *) x->data, x->ne[1], (float *) dst->data,
                gemm_best_isa(), ith, nth);
}
#endif  // AUTOGLM_GEMM_X86

}  // namespace

bool x16_gemv_applies(const ggml_tensor * w, const ggml_tensor * x) {
#if AUTOGLM_GEMM_X86
    return x16_marked(w) && gemm::f32_rows(w, x, x16_gemv_max_rows) && gemm_available();
#else
    (void) w, (void) x;
    return false;
#endif
}

ggml_tensor * x16_gemv_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
#if AUTOGLM_GEMM_X86
    if (x16_gemv_applies(w, x)) return gemm::host_gemv_node(ctx, w, x, gemv_op, names_of(w->type)->node_name);
#endif
    throw error(std::string("x16_gemv_mul_mat: '") + ggml_get_name(w) + "' is not an interleaved weight times 1-" +
                std::to_string(x16_gemv_max_rows) + " F32 rows");
}

void x16_gemv_run(ggml_type type, const uint8_t * w, int64_t n, int64_t k, const float * x, int64_t m, float * y, int n_threads,
                  const char * isa_name) {
    if (m < 1) throw invalid_argument("gemv x16: M must be positive (got " + std::to_string(m) + ")");
    if (!names_of(type)) throw invalid_argument(std::string("gemv x16: no interleaved layout for ") + ggml_type_name(type));
    if (n % x16_rows != 0) throw invalid_argument("gemv x16: N must be a multiple of 16 (got " + std::to_string(n) + ")");
    gemm::run_host_gemv(std::string("gemv x16 ") + ggml_type_name(type), n, k, block, n_threads, isa_name,
                        [&](gemm_isa isa, int t, int nt) {
#if AUTOGLM_GEMM_X86
                            gemv_thread(type, w, n, k, x, m, y, isa, t, nt);
#else
                            (void) w, (void) x, (void) m, (void) y, (void) isa, (void) t, (void) nt;
#endif
                        });
}

bool x16_gemv_node_info(const ggml_tensor * t, const char ** family, double * ops, double * bytes) {
    if (!gemm::is_custom_op(t, AUTOGLM_GEMM_FN(gemv_op))) return false;  // before t's sources are read
    return gemm::host_gemv_node_info(t, AUTOGLM_GEMM_FN(gemv_op), names_of(t->src[0]->type)->family, family, ops, bytes);
}

}  // namespace autoglm
