// ref: transformers Glm4vVisionAttention.forward (eager: softmax(q k^T * head_dim^-0.5) v over one image)
//      and Glm4vTextAttention.forward (causal, grouped-query) for prompt processing.
#include "cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "error.h"
#include "gemm.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#    define AUTOGLM_X86_ATTN 1
#    include <immintrin.h>

#    include "amx_bf16_tile.h"
#    include "avx2_reduce.h"
#    include "bf16_pairs.h"
#    include "cpu_amx.h"
#endif

namespace autoglm {

#if AUTOGLM_X86_ATTN

namespace {
// The keys worth scanning for M query rows (mask rows mask_row halves apart, n keys; null: all n): up
// to the last key any of the rows sees. A causal mask hides the tail, so both kernels stop there.
int visible_keys(const ggml_fp16_t * mask, size_t mask_row, int M, int n) {
    if (!mask) return n;
    int end = 0;
    for (int i = 0; i < M; ++i) {
        const ggml_fp16_t * mk = mask + i * mask_row;
        int last = n;
        while (last > end && mk[last - 1] == 0xFC00) --last;  // F16 -inf
        end = std::max(end, last);
    }
    return end;
}
}  // namespace

// ---------------------------------------------------------------------------------------- AVX-512
#    pragma GCC push_options
#    pragma GCC target("avx512f,avx2,fma")
namespace {
using vf512 = __m512;
inline __m512 round512(__m512 x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
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
#    define VA_FNMADD      _mm512_fnmadd_ps
#    define VA_ROUND       round512
#    define VA_SCALE2      _mm512_scalef_ps
#    define VA_LOAD_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) (p)))
#    include "cpu_attention_kernel.inc"
#    pragma GCC pop_options

// ------------------------------------------------------------------- AVX-512 BF16 (vision tower)
#    pragma GCC push_options
#    pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")
#    include "cpu_attention_bf16.inc"
#    pragma GCC pop_options

// ------------------------------------------------------------------------------------ AVX2 + FMA
#    pragma GCC push_options
#    pragma GCC target("avx2,fma,f16c")
namespace {
using vf256 = __m256;
inline float hmax256(__m256 v) { return avx2::hmax(v); }
inline float hsum256(__m256 v) { return avx2::hsum(v); }
inline __m256 round256(__m256 x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline __m256 scale2_256(__m256 p, __m256 n) {  // p * 2^n for n in [-127, 0]: 2^n's exponent field directly
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
#    define VA_FNMADD      _mm256_fnmadd_ps
#    define VA_ROUND       round256
#    define VA_SCALE2      scale2_256
#    define VA_LOAD_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (p)))
#    include "cpu_attention_kernel.inc"
#    pragma GCC pop_options

namespace {

constexpr int BLOCK_Q = 48;   // query rows per task (a multiple of VA_RM)
constexpr int BLOCK_K = 256;  // keys per softmax block (a multiple of both ISAs' panel width)
static_assert(BLOCK_K % k256::PW == 0 && BLOCK_K % k512::PW == 0);

// The F32 kernel of the ISA that attends (K and V are packed in its panels).
template <bool AVX512>
using f32_kernel = std::conditional_t<AVX512, k512::kernel, k256::kernel>;

constexpr int PACK_V_KEYS = 512;  // keys per task when packing V (enough tasks for many threads)

// One layer's K as K^T panels (dst F32 [PW, hd, ceil(n_kv/PW), n_head_kv]); tasks are (head, panel).
template <bool AVX512>
void pack_k_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * k = dst->src[0];  // F32 [hd, n_head_kv, n_kv], rows contiguous
    const int hd = (int) k->ne[0], n_kv = (int) k->ne[2], panels = (int) dst->ne[2];
    for (int t = ith; t < (int) k->ne[1] * panels; t += nth) {
        const int h = t / panels, p = t % panels;
        const float * kh = (const float *) ((const char *) k->data + h * k->nb[1]);
        float * out = (float *) ((char *) dst->data + h * dst->nb[3] + p * dst->nb[2]);
        f32_kernel<AVX512>::pack_k(kh, k->nb[2] / sizeof(float), hd, n_kv, p * f32_kernel<AVX512>::pw, out);
    }
}

// One layer's V as panels of PW dims (dst F32 [PW, n_kv, ceil(hd/PW), n_head_kv]); tasks are
// (head, panel, PACK_V_KEYS keys).
template <bool AVX512>
void pack_v_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * v = dst->src[0];  // F32 [hd, n_head_kv, n_kv], rows contiguous
    const int hd = (int) v->ne[0], n_kv = (int) v->ne[2], panels = (int) dst->ne[2];
    const int chunks = (n_kv + PACK_V_KEYS - 1) / PACK_V_KEYS;
    for (int t = ith; t < (int) v->ne[1] * panels * chunks; t += nth) {
        const int h = t / (panels * chunks), p = t / chunks % panels, j0 = t % chunks * PACK_V_KEYS;
        const float * vh = (const float *) ((const char *) v->data + h * v->nb[1] + (size_t) j0 * v->nb[2]);
        float * out = (float *) ((char *) dst->data + h * dst->nb[3] + p * dst->nb[2] + (size_t) j0 * dst->nb[1]);
        const int keys = std::min(PACK_V_KEYS, n_kv - j0);
        f32_kernel<AVX512>::pack_v(vh, v->nb[2] / sizeof(float), hd, keys, p * f32_kernel<AVX512>::pw, out);
    }
}

template <bool AVX512>
void attention_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * q = dst->src[0];
    const ggml_tensor * kp = dst->src[1];    // pack_k_op's panels
    const ggml_tensor * vp = dst->src[2];    // pack_v_op's panels
    const ggml_tensor * mask = dst->src[3];  // may be null
    const int hd = (int) q->ne[0], n_head = (int) q->ne[1], n = (int) q->ne[2];
    const int n_kv = (int) vp->ne[1], group = n_head / (int) kp->ne[3];  // query heads per K/V head
    const float scale = 1.0f / std::sqrt((float) hd);
    const int n_qb = (n + BLOCK_Q - 1) / BLOCK_Q;
    thread_local std::vector<float> scratch;
    scratch.resize(f32_kernel<AVX512>::scratch_floats(BLOCK_Q, hd, BLOCK_K));
    // Tasks (head, query block) dealt round-robin: neighbouring threads share a head's panels in cache.
    for (int t = ith; t < n_head * n_qb; t += nth) {
        const int h = t / n_qb, q0 = (t % n_qb) * BLOCK_Q, hk = h / group;
        const int M = std::min(BLOCK_Q, n - q0);
        const float * qh = (const float *) ((const char *) q->data + h * q->nb[1] + (size_t) q0 * q->nb[2]);
        const float * kh = (const float *) ((const char *) kp->data + hk * kp->nb[3]);
        const float * vh = (const float *) ((const char *) vp->data + hk * vp->nb[3]);
        float * oh = (float *) ((char *) dst->data + h * dst->nb[1] + (size_t) q0 * dst->nb[2]);
        const ggml_fp16_t * mh = mask ? (const ggml_fp16_t *) ((const char *) mask->data + (size_t) q0 * mask->nb[1]) : nullptr;
        const size_t mrow = mask ? mask->nb[1] / sizeof(ggml_fp16_t) : 0;
        f32_kernel<AVX512>::attend(M, n_kv, hd, scale, qh, q->nb[2] / 4, kh, vh, oh, dst->nb[2] / 4, mh, mrow, scratch.data(),
                                   BLOCK_K);
    }
}

// K of one layer packed into BF16 pairs for kbf16 (dst I32 [n_kv, ceil(hd/2), n_head_kv], each head in
// blocks of BLOCK_K keys: kbf16::attend_block); tasks are (head, W keys), W dividing BLOCK_K.
void pack_k_bf16_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * k = dst->src[0];  // F32 [hd, n_head_kv, n_kv], rows contiguous
    const int hd = (int) k->ne[0], n_kv = (int) k->ne[2], hp = (hd + 1) / 2;
    const int blocks = (n_kv + kbf16::W - 1) / kbf16::W;
    thread_local std::vector<uint32_t> tmp;
    tmp.resize((size_t) kbf16::W * hp);
    for (int t = ith; t < (int) k->ne[1] * blocks; t += nth) {
        const int h = t / blocks, j0 = (t % blocks) * kbf16::W;
        kbf16::pack_k_keys((const float *) ((const char *) k->data + h * k->nb[1]), k->nb[2] / sizeof(float), hd, n_kv, BLOCK_K,
                           j0, std::min(kbf16::W, n_kv - j0), (uint32_t *) ((char *) dst->data + h * dst->nb[2]), tmp.data());
    }
}

// V of one layer packed into BF16 pairs for kbf16 (dst I32 [hd, ceil(n_kv/2), n_head_kv]); tasks are
// (head, key pair).
void pack_v_bf16_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * v = dst->src[0];  // F32 [hd, n_head_kv, n_kv], rows contiguous
    const int hd = (int) v->ne[0], n_kv = (int) v->ne[2], pairs = (int) dst->ne[1];
    for (int t = ith; t < (int) v->ne[1] * pairs; t += nth) {
        const int h = t / pairs, s = t % pairs;
        kbf16::pack_v_pair((const float *) ((const char *) v->data + h * v->nb[1]), v->nb[2] / sizeof(float), hd, n_kv, s,
                           (uint32_t *) ((char *) dst->data + h * dst->nb[2]));
    }
}

void attention_bf16_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * q = dst->src[0];
    const ggml_tensor * kp = dst->src[1];
    const ggml_tensor * vp = dst->src[2];
    const int hd = (int) q->ne[0], n_head = (int) q->ne[1], n = (int) q->ne[2], hp = (hd + 1) / 2;
    const int n_kv = (int) kp->ne[0], group = n_head / (int) kp->ne[2];
    const float scale = 1.0f / std::sqrt((float) hd);
    const int n_qb = (n + BLOCK_Q - 1) / BLOCK_Q;
    thread_local std::vector<float> scratch;  // Qb, S, Pb, O, m, l (attend_block)
    scratch.resize((size_t) BLOCK_Q * (hp + BLOCK_K + BLOCK_K / 2 + hd + 2));
    const ggml_tensor * mask = dst->src[3];  // may be null
    const size_t mrow = mask ? mask->nb[1] / sizeof(ggml_fp16_t) : 0;
    static const bool tiles = cpu_attention_bf16_tiles();
    const kbf16::attention_tiles configured(tiles);
    for (int t = ith; t < n_head * n_qb; t += nth) {
        const int h = t / n_qb, q0 = (t % n_qb) * BLOCK_Q, hk = h / group;
        kbf16::attend_block(std::min(BLOCK_Q, n - q0), n_kv, hd, scale,
                            (const float *) ((const char *) q->data + h * q->nb[1] + (size_t) q0 * q->nb[2]), q->nb[2] / 4,
                            (const uint32_t *) ((const char *) kp->data + hk * kp->nb[2]),
                            (const uint32_t *) ((const char *) vp->data + hk * vp->nb[2]),
                            (float *) ((char *) dst->data + h * dst->nb[1] + (size_t) q0 * dst->nb[2]), dst->nb[2] / 4,
                            mask ? (const ggml_fp16_t *) ((const char *) mask->data + (size_t) q0 * mask->nb[1]) : nullptr, mrow,
                            scratch.data(), BLOCK_K, tiles);
    }
}

}  // namespace
#endif  // AUTOGLM_X86_ATTN

namespace {
std::string resolved_request(const std::string & request) {
    if (!request.empty() && request != "auto") return request;
    const char * env = std::getenv("AUTOGLM_CPU_ATTN");
    return env && *env ? env : "auto";
}
}  // namespace

bool cpu_attention_is_auto(const std::string & request) { return resolved_request(request) == "auto"; }

attn_kernel cpu_attention_kernel(const std::string & request) {
    const std::string want = resolved_request(request);
    if (want == "auto") {
        return cpu_attention_has(attn_kernel::avx512) ? attn_kernel::avx512
               : cpu_attention_has(attn_kernel::avx2) ? attn_kernel::avx2
                                                      : attn_kernel::none;
    }
    if (want == "ggml") return attn_kernel::none;
    for (attn_kernel kern : {attn_kernel::avx2, attn_kernel::avx512, attn_kernel::avx512_bf16}) {
        if (want != attn_kernel_name(kern)) continue;
        if (cpu_attention_has(kern)) return kern;
        throw invalid_argument("vision attention '" + want + "' is not available on this CPU/build; use 'auto' or 'ggml'");
    }
    throw invalid_argument("vision attention '" + want + "' is unknown; expected auto, ggml, avx2, avx512 or avx512_bf16");
}

bool cpu_attention_has(attn_kernel kernel) {
#if AUTOGLM_X86_ATTN
    const bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool has512 = has2 && __builtin_cpu_supports("avx512f");
    switch (kernel) {
        case attn_kernel::avx2: return has2;
        case attn_kernel::avx512: return has512;
        case attn_kernel::avx512_bf16:
            return has512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                   __builtin_cpu_supports("avx512bf16");
        case attn_kernel::none: return true;
    }
#endif
    return kernel == attn_kernel::none;
}

const char * attn_kernel_name(attn_kernel kernel) {
    switch (kernel) {
        case attn_kernel::avx2: return "avx2";
        case attn_kernel::avx512: return "avx512";
        case attn_kernel::avx512_bf16: return "avx512_bf16";
        default: return "ggml";
    }
}

ggml_tensor * cpu_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * mask,
                            attn_kernel kernel) {
    const bool ok = q->type == GGML_TYPE_F32 && k->type == GGML_TYPE_F32 && v->type == GGML_TYPE_F32 &&
                    q->nb[0] == sizeof(float) && k->nb[0] == sizeof(float) && v->nb[0] == sizeof(float) && k->ne[0] == q->ne[0] &&
                    v->ne[0] == q->ne[0] && k->ne[1] == v->ne[1] && k->ne[2] == v->ne[2] && q->ne[1] % k->ne[1] == 0 &&
                    (!mask || (mask->type == GGML_TYPE_F16 && mask->ne[0] == k->ne[2] && mask->ne[1] >= q->ne[2]));
    if (!ok) throw error("cpu_attention: unexpected tensor layout");
#if AUTOGLM_X86_ATTN
    if (kernel == attn_kernel::none) throw error("cpu_attention: no CPU kernel on this machine");
    if (kernel == attn_kernel::avx512_bf16) return cpu_attention_bf16(ctx, q, k, v, mask);
    const bool avx512 = kernel != attn_kernel::avx2;
    const int64_t pw = avx512 ? f32_kernel<true>::pw : f32_kernel<false>::pw;
    const int64_t hd = q->ne[0], heads_kv = k->ne[1], n_kv = k->ne[2];
    ggml_tensor * ks[1] = {k};
    ggml_tensor * kp = ggml_custom_4d(ctx, GGML_TYPE_F32, pw, hd, (n_kv + pw - 1) / pw, heads_kv, ks, 1,
                                      avx512 ? pack_k_op<true> : pack_k_op<false>, GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(kp, "attention K^T panels");
    ggml_tensor * vs[1] = {v};
    ggml_tensor * vp = ggml_custom_4d(ctx, GGML_TYPE_F32, pw, n_kv, (hd + pw - 1) / pw, heads_kv, vs, 1,
                                      avx512 ? pack_v_op<true> : pack_v_op<false>, GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(vp, "attention V panels");
    ggml_tensor * args[4] = {q, kp, vp, mask};
    ggml_tensor * out = ggml_custom_4d(ctx, GGML_TYPE_F32, hd, q->ne[1], q->ne[2], 1, args, mask ? 4 : 3,
                                       avx512 ? attention_op<true> : attention_op<false>, GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(out, cpu_attention_name);  // what the profiler counts this op's work by
    return out;
#else
    (void) ctx;
    (void) kernel;
    throw error("cpu_attention: no CPU kernel on this platform");
#endif
}

bool cpu_attention_bf16_tiles() {
    // AUTOGLM_GEMM_ISA=avx512_bf16 keeps the tiles idle here too
    static const bool tiles = [] {
        try {
            return gemm_available() && gemm_best_isa() == gemm_isa::amx;
        } catch (const std::exception &) {  // a bad AUTOGLM_GEMM_ISA: refused where the graphs are planned
            return false;
        }
    }();
    return tiles;
}

ggml_tensor * cpu_attention_bf16(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * mask) {
    const bool ok = q->type == GGML_TYPE_F32 && k->type == GGML_TYPE_F32 && v->type == GGML_TYPE_F32 &&
                    q->nb[0] == sizeof(float) && k->nb[0] == sizeof(float) && v->nb[0] == sizeof(float) && k->ne[0] == q->ne[0] &&
                    v->ne[0] == q->ne[0] && k->ne[1] == v->ne[1] && k->ne[2] == v->ne[2] && q->ne[1] % k->ne[1] == 0 &&
                    (!mask || (mask->type == GGML_TYPE_F16 && mask->ne[0] == k->ne[2] && mask->ne[1] >= q->ne[2]));
    if (!ok) throw error("cpu_attention_bf16: unexpected tensor layout");
#if AUTOGLM_X86_ATTN
    if (!cpu_attention_has(attn_kernel::avx512_bf16)) throw error("cpu_attention_bf16: this CPU lacks AVX512_BF16");
    const int64_t hd = q->ne[0], n_kv = k->ne[2], heads_kv = k->ne[1];
    ggml_tensor * ks[1] = {k};
    ggml_tensor * kp =
        ggml_custom_4d(ctx, GGML_TYPE_I32, n_kv, (hd + 1) / 2, heads_kv, 1, ks, 1, pack_k_bf16_op, GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(kp, "attention K as bf16 pairs");
    ggml_tensor * vs[1] = {v};
    ggml_tensor * vp =
        ggml_custom_4d(ctx, GGML_TYPE_I32, hd, (n_kv + 1) / 2, heads_kv, 1, vs, 1, pack_v_bf16_op, GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(vp, "attention V as bf16 pairs");
    ggml_tensor * args[4] = {q, kp, vp, mask};
    ggml_tensor * out = ggml_custom_4d(ctx, GGML_TYPE_F32, hd, q->ne[1], q->ne[2], 1, args, mask ? 4 : 3, attention_bf16_op,
                                       GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(out, cpu_attention_bf16_name);
    return out;
#else
    (void) ctx;
    throw error("cpu_attention_bf16: no CPU kernel on this platform");
#endif
}

}  // namespace autoglm
