// ref: ggml-cpu quants.c ggml_vec_dot_q8_0_q8_0, ggml_vec_dot_q5_0_q8_0, ggml_vec_dot_q4_0_q8_0 (the
//      arithmetic); ggml-common.h block_q8_0, block_q5_0, block_q4_0 (the layouts).
#include "gemv_block32.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "error.h"
#include "gemm.h"
#include "gemm_panel.h"
#include "gemv_host.h"

#if AUTOGLM_GEMM_X86
#    include "avx512_reduce.h"
#    include "gemm_block32.h"
#endif

namespace autoglm {

namespace {

constexpr int block = 32;
constexpr int group = 8;  // rows per step

struct weight_type {
    ggml_type type;
    size_t block_bytes;
    int offset;  // u = w + offset is unsigned (the VNNI variant's operand); -1: an affine type
    const char * node_name;
    const char * family;
};
constexpr weight_type types[] = {
    {GGML_TYPE_Q8_0, 34, 128, "gemv_block32_q8_0", "GEMV q8_0 (ours)"},
    {GGML_TYPE_Q5_0, 22, 16, "gemv_block32_q5_0", "GEMV q5_0 (ours)"},
    {GGML_TYPE_Q4_0, 18, 8, "gemv_block32_q4_0", "GEMV q4_0 GGUF layout (ours)"},
    {GGML_TYPE_Q5_1, 24, -1, "gemv_block32_q5_1", "GEMV q5_1 (ours)"},
    {GGML_TYPE_Q4_1, 20, -1, "gemv_block32_q4_1", "GEMV q4_1 (ours)"},
};

// The affine types (w = d u + m, u unsigned): each block adds m x (da x sum(q)), sum(q) kept in the
// activations' corr (gemm_block32.h); u needs no offset.
template <ggml_type T>
constexpr bool affine = T == GGML_TYPE_Q5_1 || T == GGML_TYPE_Q4_1;
// Where the 4-bit values and the 5th bits start in a block.
template <ggml_type T>
constexpr size_t qs_at = T == GGML_TYPE_Q5_0   ? 6
                         : T == GGML_TYPE_Q5_1 ? 8
                         : T == GGML_TYPE_Q4_1 ? 4
                                               : 2;
template <ggml_type T>
constexpr size_t qh_at = T == GGML_TYPE_Q5_1 ? 4 : 2;
template <ggml_type T>
constexpr bool five_bits = T == GGML_TYPE_Q5_0 || T == GGML_TYPE_Q5_1;
const weight_type * type_info(ggml_type t) {
    for (const weight_type & w : types) {
        if (w.type == t) return &w;
    }
    return nullptr;
}

#if AUTOGLM_GEMM_X86
#    define AUTOGLM_GEMV_AVX2 __attribute__((target("avx2,fma,f16c")))

// One block of one row in k order: Q8_0's 32 signed weights as stored, the others' as unsigned
// u = w + offset (0..31: vpmaddubsw's pair sums stay exact).
template <ggml_type T>
AUTOGLM_GEMV_AVX2 inline __m256i load_block(const uint8_t * blk) {
    if constexpr (T == GGML_TYPE_Q8_0) {
        return _mm256_loadu_si256((const __m256i *) (blk + 2));
    } else {
        const __m128i low = _mm_set1_epi8(0x0F);
        const __m128i qs = _mm_loadu_si128((const __m128i *) (blk + qs_at<T>) );
        // elements 0..15 are the low nibbles, 16..31 the high ones
        const __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), low), _mm_and_si128(qs, low));
        if constexpr (!five_bits<T>) {
            return nib;
        } else {
            return _mm256_or_si256(nib, gemm::fifth_bits(blk + qh_at<T>));
        }
    }
}

// One block of two rows (r in the low 256 bits, r1 in the high) as 64 unsigned u = w + offset in k
// order: 512-bit operations serve both rows, and the 5th bits of Q5_0 are a mask as stored.
template <ggml_type T>
AUTOGLM_TARGET_AVX512_VNNI inline __m512i load_pair_u(const uint8_t * r, const uint8_t * r1) {
    if constexpr (T == GGML_TYPE_Q8_0) {
        const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *) (r + 2))),
                                             _mm256_loadu_si256((const __m256i *) (r1 + 2)), 1);
        return _mm512_xor_si512(w, _mm512_set1_epi8((char) 0x80));
    } else {
        constexpr size_t at = qs_at<T>;
        const __m256i qs = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *) (r + at))),
                                                   _mm_loadu_si128((const __m128i *) (r1 + at)), 1);
        // 16-byte lanes: r's bytes twice, r1's twice; then the low nibbles of the first copy (elements
        // 0..15), the high nibbles of the second (16..31)
        const __m512i twice = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), _mm512_castsi256_si512(qs));
        const __m512i shift = _mm512_setr_epi64(0, 0, 4 * 0x0001000100010001LL, 4 * 0x0001000100010001LL, 0, 0,
                                                4 * 0x0001000100010001LL, 4 * 0x0001000100010001LL);
        const __m512i nib = _mm512_and_si512(_mm512_srlv_epi16(twice, shift), _mm512_set1_epi8(0x0F));
        if constexpr (!five_bits<T>) {
            return nib;
        } else {
            uint32_t qh, qh1;
            std::memcpy(&qh, r + qh_at<T>, 4);
            std::memcpy(&qh1, r1 + qh_at<T>, 4);
            return _mm512_mask_add_epi8(nib, (__mmask64) qh | (__mmask64) qh1 << 32, nib, _mm512_set1_epi8(16));
        }
    }
}

// The exact int32 sums of one block of each of the 8 rows (at rows[r] + off) with the activations a,
// row r in lane r. AVX2: Q8_0 as |w| x sign(a, w) (exact: the activations stay within +-127), the
// others as u x a; VNNI: u x a, two rows per vpdpbusd. Where u x a is summed, the offset's share
// (corr) is added by the caller (avx2_sums_lack_offset, and always on VNNI) unless the type is affine.
template <ggml_type T>
constexpr bool avx2_sums_lack_offset = T != GGML_TYPE_Q8_0 && !affine<T>;
template <ggml_type T>
AUTOGLM_GEMV_AVX2 inline __m256i group_sums_avx2(const uint8_t * const rows[group], size_t off, __m256i a) {
    __m256i d[group];
    for (int r = 0; r < group; ++r) {
        const __m256i w = load_block<T>(rows[r] + off);
        const __m256i pairs =
            T == GGML_TYPE_Q8_0 ? _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w)) : _mm256_maddubs_epi16(w, a);
        d[r] = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
    }
    return avx2::hsum_rows(d);
}
template <ggml_type T>
AUTOGLM_TARGET_AVX512_VNNI inline __m256i group_sums_vnni(const uint8_t * const rows[group], size_t off, __m256i a) {
    const __m512i a2 = _mm512_inserti64x4(_mm512_castsi256_si512(a), a, 1);
    __m512i z[group / 2];  // rows 2p (low 256 bits) and 2p + 1
    for (int p = 0; p < group / 2; ++p) {
        z[p] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), load_pair_u<T>(rows[2 * p] + off, rows[2 * p + 1] + off), a2);
    }
    return avx512::hsum_row_pairs(z);
}

#    define GEMV_ROWS        gemv_rows_avx2
#    define GEMV_TARGET      AUTOGLM_GEMV_AVX2
#    define GEMV_GROUP_SUMS  group_sums_avx2
#    define GEMV_OFFSET_SUMS avx2_sums_lack_offset<T>
#    include "gemv_block32_rows.inc"
#    undef GEMV_ROWS
#    undef GEMV_TARGET
#    undef GEMV_GROUP_SUMS
#    undef GEMV_OFFSET_SUMS
#    define GEMV_ROWS        gemv_rows_vnni
#    define GEMV_TARGET      AUTOGLM_TARGET_AVX512_VNNI
#    define GEMV_GROUP_SUMS  group_sums_vnni
#    define GEMV_OFFSET_SUMS !affine<T>
#    include "gemv_block32_rows.inc"
#    undef GEMV_ROWS
#    undef GEMV_TARGET
#    undef GEMV_GROUP_SUMS
#    undef GEMV_OFFSET_SUMS

using rows_fn = void (*)(const uint8_t *, int64_t, size_t, const gemm::q8_0_rows &, float *, int64_t, int64_t);
rows_fn rows_for(ggml_type t, gemm_isa isa) {
    const bool vnni = gemm_isa_has_avx512(isa);
    switch (t) {
        case GGML_TYPE_Q8_0: return vnni ? gemv_rows_vnni<GGML_TYPE_Q8_0> : gemv_rows_avx2<GGML_TYPE_Q8_0>;
        case GGML_TYPE_Q5_0: return vnni ? gemv_rows_vnni<GGML_TYPE_Q5_0> : gemv_rows_avx2<GGML_TYPE_Q5_0>;
        case GGML_TYPE_Q5_1: return vnni ? gemv_rows_vnni<GGML_TYPE_Q5_1> : gemv_rows_avx2<GGML_TYPE_Q5_1>;
        case GGML_TYPE_Q4_1: return vnni ? gemv_rows_vnni<GGML_TYPE_Q4_1> : gemv_rows_avx2<GGML_TYPE_Q4_1>;
        default: return vnni ? gemv_rows_vnni<GGML_TYPE_Q4_0> : gemv_rows_avx2<GGML_TYPE_Q4_0>;
    }
}

// One thread's share: the row quantized into this thread's buffer (as ggml's Q8_0, with the
// offset's share per block), then its groups of rows.
void gemv_thread(ggml_type t, const uint8_t * w, int64_t n, int64_t k, const float * x, float * y, gemm_isa isa, int ith,
                 int nth) {
    int64_t r0, r1;
    gemm::group_share(n, group, ith, nth, r0, r1);
    if (r0 >= r1) return;
    const gemm::q8_0_rows a = gemm::quantize_row_for_thread(x, k, type_info(t)->offset);
    rows_for(t, isa)(w, k / block, type_info(t)->block_bytes, a, y, r0, r1);
}

void gemv_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    gemv_thread(w->type, (const uint8_t *) w->data, w->ne[1], w->ne[0], (const float *) x->data, (float *) dst->data,
                gemm_best_isa(), ith, nth);
}
#endif  // AUTOGLM_GEMM_X86

}  // namespace

bool gemv_block32_applies(const ggml_tensor * w, const ggml_tensor * x) {
#if AUTOGLM_GEMM_X86
    return type_info(w->type) && gemm::host_gemv_operands(w, x) && gemm_available();
#else
    (void) w, (void) x;
    return false;
#endif
}

ggml_tensor * gemv_block32_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
#if AUTOGLM_GEMM_X86
    if (gemv_block32_applies(w, x)) return gemm::host_gemv_node(ctx, w, x, gemv_op, type_info(w->type)->node_name);
#endif
    return ggml_mul_mat(ctx, w, x);
}

void gemv_block32_run(ggml_type type, const uint8_t * w, int64_t n, int64_t k, const float * x, float * y, int n_threads,
                      const char * isa_name) {
    if (!type_info(type)) throw invalid_argument(std::string("gemv: no GGUF-layout kernel for ") + ggml_type_name(type));
    gemm::run_host_gemv(std::string("gemv ") + ggml_type_name(type), n, k, block, n_threads, isa_name,
                        [&](gemm_isa isa, int t, int nt) {
#if AUTOGLM_GEMM_X86
                            gemv_thread(type, w, n, k, x, y, isa, t, nt);
#else
                            (void) w, (void) x, (void) y, (void) isa, (void) t, (void) nt;
#endif
                        });
}

bool gemv_block32_node_info(const ggml_tensor * t, const char ** family, double * ops, double * bytes) {
    if (!gemm::is_custom_op(t, AUTOGLM_GEMM_FN(gemv_op))) return false;
    return gemm::host_gemv_node_info(t, AUTOGLM_GEMM_FN(gemv_op), type_info(t->src[0]->type)->family, family, ops, bytes);
}

}  // namespace autoglm
