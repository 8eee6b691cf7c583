// ref: transformers Glm4vVisionAttention.forward (eager: softmax(q k^T * head_dim^-0.5) v over one image)
//      and Glm4vTextAttention.forward (causal, grouped-query) for prompt processing.
#include "cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "error.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#    define AUTOGLM_X86_ATTN 1
#    include <immintrin.h>

#    include "avx2_reduce.h"
#endif

namespace autoglm {

#if AUTOGLM_X86_ATTN

// ---------------------------------------------------------------------------------------- AVX-512
#    pragma GCC push_options
#    pragma GCC target("avx512f,avx2,fma")
namespace {
using vf512 = __m512;
inline __m512 exp512(__m512 x) {  // exp(x) for x <= 0 (Cephes expf polynomial, ~1 ulp)
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}
}  // namespace
#    define VA_NS          k512
#    define VA_W           16
#    define VA_RM          6
#    define VA_RN          4
#    define vf             vf512
#    define VA_LOAD        _mm512_loadu_ps
#    define VA_STORE       _mm512_storeu_ps
#    define VA_SET1        _mm512_set1_ps
#    define VA_ZERO        _mm512_setzero_ps()
#    define VA_FMA         _mm512_fmadd_ps
#    define VA_MUL         _mm512_mul_ps
#    define VA_ADD         _mm512_add_ps
#    define VA_SUB         _mm512_sub_ps
#    define VA_MAX         _mm512_max_ps
#    define VA_HMAX        _mm512_reduce_max_ps
#    define VA_HSUM        _mm512_reduce_add_ps
#    define VA_EXP         exp512
#    define VA_LOAD_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) (p)))
#    include "cpu_attention_kernel.inc"
#    pragma GCC pop_options

// ------------------------------------------------------------------------------------ AVX2 + FMA
#    pragma GCC push_options
#    pragma GCC target("avx2,fma,f16c")
namespace {
using vf256 = __m256;
inline float hmax256(__m256 v) { return avx2::hmax(v); }
inline float hsum256(__m256 v) { return avx2::hsum(v); }
inline __m256 exp256(__m256 x) {  // exp(x) for x <= 0, as exp512
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    const __m256 n =
        _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    // 2^n for n in [-126, 0]: the exponent field directly
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
}  // namespace
#    define VA_NS          k256
#    define VA_W           8
#    define VA_RM          6
#    define VA_RN          2
#    define vf             vf256
#    define VA_LOAD        _mm256_loadu_ps
#    define VA_STORE       _mm256_storeu_ps
#    define VA_SET1        _mm256_set1_ps
#    define VA_ZERO        _mm256_setzero_ps()
#    define VA_FMA         _mm256_fmadd_ps
#    define VA_MUL         _mm256_mul_ps
#    define VA_ADD         _mm256_add_ps
#    define VA_SUB         _mm256_sub_ps
#    define VA_MAX         _mm256_max_ps
#    define VA_HMAX        hmax256
#    define VA_HSUM        hsum256
#    define VA_EXP         exp256
#    define VA_LOAD_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (p)))
#    include "cpu_attention_kernel.inc"
#    pragma GCC pop_options

namespace {

constexpr int BLOCK_Q = 48;   // query rows per task (a multiple of VA_RM)
constexpr int BLOCK_K = 256;  // keys per softmax block (a multiple of both ISAs' RN * W)

template <bool AVX512>
void attention_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * q = dst->src[0];
    const ggml_tensor * kt = dst->src[1];
    const ggml_tensor * v = dst->src[2];
    const ggml_tensor * mask = dst->src[3];  // may be null
    const int hd = (int) q->ne[0], n_head = (int) q->ne[1], n = (int) q->ne[2];
    const int n_kv = (int) kt->ne[0], group = n_head / (int) kt->ne[2];  // query heads per K/V head
    const float scale = 1.0f / std::sqrt((float) hd);
    const int n_qb = (n + BLOCK_Q - 1) / BLOCK_Q;
    thread_local std::vector<float> scratch;
    scratch.resize((size_t) BLOCK_Q * (2 * hd + BLOCK_K + 2));
    // Tasks (head, query block) dealt round-robin: neighbouring threads share a head's K^T and V in cache.
    for (int t = ith; t < n_head * n_qb; t += nth) {
        const int h = t / n_qb, q0 = (t % n_qb) * BLOCK_Q, hk = h / group;
        const int M = std::min(BLOCK_Q, n - q0);
        const float * qp = (const float *) ((const char *) q->data + h * q->nb[1] + (size_t) q0 * q->nb[2]);
        const float * ktp = (const float *) ((const char *) kt->data + hk * kt->nb[2]);
        const float * vp = (const float *) ((const char *) v->data + hk * v->nb[1]);
        float * op = (float *) ((char *) dst->data + h * dst->nb[1] + (size_t) q0 * dst->nb[2]);
        const ggml_fp16_t * mp = mask ? (const ggml_fp16_t *) ((const char *) mask->data + (size_t) q0 * mask->nb[1]) : nullptr;
        const size_t mrow = mask ? mask->nb[1] / sizeof(ggml_fp16_t) : 0;
        if constexpr (AVX512) {
            k512::attend_block(M, n_kv, hd, scale, qp, q->nb[2] / 4, ktp, kt->nb[1] / 4, vp, v->nb[2] / 4, op, dst->nb[2] / 4, mp,
                               mrow, scratch.data(), BLOCK_K);
        } else {
            k256::attend_block(M, n_kv, hd, scale, qp, q->nb[2] / 4, ktp, kt->nb[1] / 4, vp, v->nb[2] / 4, op, dst->nb[2] / 4, mp,
                               mrow, scratch.data(), BLOCK_K);
        }
    }
}

}  // namespace
#endif  // AUTOGLM_X86_ATTN

attn_kernel cpu_attention_kernel(const std::string & request) {
    std::string want = request;
    if (want.empty() || want == "auto") {
        const char * env = std::getenv("AUTOGLM_CPU_ATTN");
        want = env && *env ? env : "auto";
    }
#if AUTOGLM_X86_ATTN
    const bool has512 = __builtin_cpu_supports("avx512f");
    const bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    const bool has512 = false, has2 = false;
#endif
    if (want == "auto") return has512 ? attn_kernel::avx512 : has2 ? attn_kernel::avx2 : attn_kernel::none;
    if (want == "ggml") return attn_kernel::none;
    if (want == "avx2" || want == "avx512") {
        if (want == "avx2" ? has2 : has512) return want == "avx2" ? attn_kernel::avx2 : attn_kernel::avx512;
        throw invalid_argument("vision attention '" + want + "' is not available on this CPU/build; use 'auto' or 'ggml'");
    }
    throw invalid_argument("vision attention '" + want + "' is unknown; expected auto, ggml, avx2 or avx512");
}

ggml_tensor * cpu_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * kt, ggml_tensor * v, ggml_tensor * mask,
                            attn_kernel kernel) {
    const bool ok = q->type == GGML_TYPE_F32 && kt->type == GGML_TYPE_F32 && v->type == GGML_TYPE_F32 && ggml_is_contiguous(kt) &&
                    q->nb[0] == sizeof(float) && v->nb[0] == sizeof(float) && kt->ne[1] == q->ne[0] && v->ne[0] == q->ne[0] &&
                    kt->ne[0] == v->ne[2] && kt->ne[2] == v->ne[1] && q->ne[1] % kt->ne[2] == 0 &&
                    (!mask || (mask->type == GGML_TYPE_F16 && mask->ne[0] == kt->ne[0] && mask->ne[1] >= q->ne[2]));
    if (!ok) throw error("cpu_attention: unexpected tensor layout");
#if AUTOGLM_X86_ATTN
    if (kernel == attn_kernel::none) throw error("cpu_attention: no CPU kernel on this machine");
    ggml_tensor * args[4] = {q, kt, v, mask};
    ggml_custom_op_t fn = kernel == attn_kernel::avx512 ? attention_op<true> : attention_op<false>;
    ggml_tensor * out =
        ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0], q->ne[1], q->ne[2], 1, args, mask ? 4 : 3, fn, GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(out, cpu_attention_name);  // what the profiler counts this op's work by
    return out;
#else
    (void) ctx;
    (void) kernel;
    throw error("cpu_attention: no CPU kernel on this platform");
#endif
}

}  // namespace autoglm
