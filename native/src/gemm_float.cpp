// ref: ggml-cpu's MUL_MAT for F32/F16/BF16 weights (ggml_compute_forward_mul_mat), which this replaces
// on the CPU; the blocking is the usual one of BLAS libraries (Goto & van de Geijn, "Anatomy of
// high-performance matrix multiplication", 2008): packed B block in L2/L3, packed A block in L2, a
// register tile of accumulators.
#include "gemm_float.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "backend_loader.h"
#include "bf16_pairs.h"
#include "error.h"
#include "gemm_float_amx.h"
#include "gemm_panel.h"

namespace autoglm {

namespace {

// Block sizes, measured on the 9B tower's shapes (bench/README.md): a longer KC means fewer passes
// over c (each block of k loads and stores every output) and cost less than the B panel (KC x P
// floats, 64 KiB on AVX-512) leaving L1 for L2; a whole thread's columns packed at once means A is
// packed once per block.
constexpr int KC = 512;       // k per packed block
constexpr int MC = 96;        // rows per packed A block (a multiple of every ISA's tile rows): 192 KiB, L2
constexpr int64_t NC = 4096;  // at most this many columns packed per block: KC x NC floats = 8 MiB

struct float_weights {
    ggml_type type;  // F32, F16 or BF16
    const uint8_t * data;
    size_t row_bytes;  // between consecutive rows (output columns)
    int64_t n;         // rows
};

// Columns [j0, j0 + ncols) of w^T over k [k0, k0 + kc) as panels bp[panel][k][P] of F32; columns past
// w.n are zero. Each weight is converted once here and then used by every row of the activations.
#if AUTOGLM_GEMM_X86
__attribute__((target("avx2,fma,f16c")))
#endif
void pack_b(const float_weights & w, int64_t j0, int64_t ncols, int P, int64_t k0, int kc, float * bp) {
    for (int64_t jj = 0; jj < ncols; ++jj) {
        float * dst = bp + (size_t) (jj / P) * kc * P + jj % P;
        const int64_t j = j0 + jj;
        if (j >= w.n) {
            for (int k = 0; k < kc; ++k) dst[(size_t) k * P] = 0.0f;
            continue;
        }
        const uint8_t * row = w.data + (size_t) j * w.row_bytes;
        int k = 0;
        if (w.type == GGML_TYPE_F32) {
            const float * s = (const float *) row + k0;
            for (; k < kc; ++k) dst[(size_t) k * P] = s[k];
        } else if (w.type == GGML_TYPE_F16) {
            const ggml_fp16_t * s = (const ggml_fp16_t *) row + k0;
#if AUTOGLM_GEMM_X86
            alignas(32) float t[8];
            for (; k + 8 <= kc; k += 8) {
                _mm256_store_ps(t, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (s + k))));
                for (int u = 0; u < 8; ++u) dst[(size_t) (k + u) * P] = t[u];
            }
#endif
            for (; k < kc; ++k) dst[(size_t) k * P] = ggml_fp16_to_fp32(s[k]);
        } else {  // BF16: the upper half of an F32
            const uint16_t * s = (const uint16_t *) row + k0;
            for (; k < kc; ++k) {
                const uint32_t bits = (uint32_t) s[k] << 16;
                std::memcpy(dst + (size_t) k * P, &bits, sizeof bits);
            }
        }
    }
}

// Rows [m0, m0 + tiles*R) of a from column k0 as tiles ap[tile][step][R] of `steps` packed elements per
// row (one per k, or per pair of k); fill(dst, src) writes one row's elements R apart; rows past m are zero.
template <class T, class Fill>
inline void pack_a_tiles(const float * a, int64_t lda, int64_t m, int64_t m0, int tiles, int R, int64_t k0, int steps, T * ap,
                         Fill fill) {
    for (int t = 0; t < tiles; ++t) {
        for (int i = 0; i < R; ++i) {
            T * dst = ap + (size_t) t * steps * R + i;
            const int64_t row = m0 + (int64_t) t * R + i;
            if (row < m) fill(dst, a + row * lda + k0);
            else
                for (int k = 0; k < steps; ++k) dst[k * R] = T(0);
        }
    }
}

// Rows [m0, m0 + tiles*R) of a over k [k0, k0 + kc) as tiles ap[tile][k][R]; rows past m are zero.
void pack_a(const float * a, int64_t lda, int64_t m, int64_t m0, int tiles, int R, int64_t k0, int kc, float * ap) {
    pack_a_tiles(a, lda, m, m0, tiles, R, k0, kc, ap, [&](float * dst, const float * src) {
        for (int k = 0; k < kc; ++k) dst[k * R] = src[k];
    });
}

}  // namespace

#if AUTOGLM_GEMM_X86
#    pragma GCC push_options
#    pragma GCC target("avx512f,avx2,fma,f16c")
#    define VF_NS           f512
#    define VF_W            16
#    define VF_R            12
#    define vf              __m512
#    define VF_LOAD         _mm512_loadu_ps
#    define VF_STORE        _mm512_storeu_ps
#    define VF_ZERO         _mm512_setzero_ps()
#    define VF_EL           float
#    define VF_KPER         1
#    define VF_BLOAD        _mm512_loadu_ps
#    define VF_ABCAST       _mm512_set1_ps
#    define VF_MAC(s, a, b) _mm512_fmadd_ps(a, b, s)
#    define VF_PACK_B       pack_b
#    define VF_PACK_A       pack_a
#    include "gemm_float_kernel.inc"
#    pragma GCC pop_options

#    pragma GCC push_options
#    pragma GCC target("avx2,fma,f16c")
#    define VF_NS           f256
#    define VF_W            8
#    define VF_R            6
#    define vf              __m256
#    define VF_LOAD         _mm256_loadu_ps
#    define VF_STORE        _mm256_storeu_ps
#    define VF_ZERO         _mm256_setzero_ps()
#    define VF_EL           float
#    define VF_KPER         1
#    define VF_BLOAD        _mm256_loadu_ps
#    define VF_ABCAST       _mm256_set1_ps
#    define VF_MAC(s, a, b) _mm256_fmadd_ps(a, b, s)
#    define VF_PACK_B       pack_b
#    define VF_PACK_A       pack_a
#    include "gemm_float_kernel.inc"
#    pragma GCC pop_options

// BF16 weights on AVX512_BF16: activations rounded to BF16 (round to nearest even, as ggml and the
// production deployments' bf16 ViT do), products of pairs along k summed into F32 by vdpbf16ps, twice
// the multiply-adds per instruction of an F32 FMA. Weights and activations are packed as pairs.
#    pragma GCC push_options
#    pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")
namespace {

// The packed weights vdpbf16ps reads: bp[panel][k/2][P] (bf16_pairs.h).
void pack_b_bf16_pairs(const float_weights & w, int64_t j0, int64_t ncols, int P, int64_t k0, int kc, uint32_t * bp) {
    pack_bf16_weight_pairs(w.data, w.row_bytes, w.n, j0, ncols, P, k0, kc, (kc + 1) / 2, bp);
}

// Rows [m0, m0 + tiles*R) of a over k [k0, k0 + kc) rounded to BF16 as tiles ap[tile][k/2][R] of
// pairs; an odd kc's last pair and rows past m are zero. vcvtne2ps2bf16 rounds to nearest even.
void pack_a_bf16_pairs(const float * a, int64_t lda, int64_t m, int64_t m0, int tiles, int R, int64_t k0, int kc, uint32_t * ap) {
    const int kp = (kc + 1) / 2;
    pack_a_tiles(a, lda, m, m0, tiles, R, k0, kp, ap, [&](uint32_t * dst, const float * src) {
        alignas(64) uint32_t row[KC / 2];
        to_bf16_pairs(src, kc, 1.0f, row);
        for (int p = 0; p < kp; ++p) dst[p * R] = row[p];
    });
}

}  // namespace

#    define VF_NS           fbf16
#    define VF_W            16
#    define VF_R            12
#    define vf              __m512
#    define VF_LOAD         _mm512_loadu_ps
#    define VF_STORE        _mm512_storeu_ps
#    define VF_ZERO         _mm512_setzero_ps()
#    define VF_EL           uint32_t
#    define VF_KPER         2
#    define VF_BLOAD(p)     ((__m512bh) _mm512_loadu_si512(p))
#    define VF_ABCAST(x)    ((__m512bh) _mm512_set1_epi32((int) (x)))
#    define VF_MAC(s, a, b) _mm512_dpbf16_ps(s, a, b)
#    define VF_PACK_B       pack_b_bf16_pairs
#    define VF_PACK_A       pack_a_bf16_pairs
#    include "gemm_float_kernel.inc"
#    pragma GCC pop_options
#endif

namespace {

// Thread ith's share of c's columns, in whole panels of the ISA's width.
void float_gemm_thread(const float_weights & w, int64_t k, const float * a, int64_t lda, int64_t m, float * c, int64_t ldc,
                       gemm_isa isa, int ith, int nth) {
#if AUTOGLM_GEMM_X86
    const bool wide = gemm_isa_has_avx512(isa), bf16_dot = gemm_isa_has_bf16(isa) && w.type == GGML_TYPE_BF16;
    const int P = wide ? f512::P : f256::P;
    const int64_t n_panels = (w.n + P - 1) / P;
    const int64_t p0 = n_panels * ith / nth, p1 = n_panels * (ith + 1) / nth;
    if (p0 >= p1) return;
    if (bf16_dot && isa == gemm_isa::amx) {  // the tile unit (gemm_float_amx.h), 32 columns a panel
        return bf16_amx_gemm_columns(w.data, w.row_bytes, w.n, k, a, lda, m, c, ldc, p0 * P, std::min(w.n, p1 * P));
    }
    // packed blocks, 64-byte aligned (a vector load never splits a cache line), kept per thread
    thread_local std::vector<float> buf;
    const size_t b_floats = (size_t) KC * std::min<int64_t>(NC, (p1 - p0) * P), a_floats = (size_t) KC * MC;
    if (buf.size() < b_floats + a_floats + 16) buf.resize(b_floats + a_floats + 16);
    float * bp = (float *) (((uintptr_t) buf.data() + 63) & ~(uintptr_t) 63);
    float * ap = bp + b_floats;
    // (the BF16 pairs take no more room than the floats: half as many k steps of 4 bytes)
    if (bf16_dot) fbf16::panels(w, k, a, lda, m, c, ldc, p0, p1, (uint32_t *) bp, (uint32_t *) ap);
    else if (wide) f512::panels(w, k, a, lda, m, c, ldc, p0, p1, bp, ap);
    else f256::panels(w, k, a, lda, m, c, ldc, p0, p1, bp, ap);
#else
    (void) w, (void) k, (void) a, (void) lda, (void) m, (void) c, (void) ldc, (void) isa, (void) ith, (void) nth;
#endif
}

float_weights weights_of(const ggml_tensor * w) { return {w->type, (const uint8_t *) w->data, w->nb[1], w->ne[1]}; }

void float_gemm_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0];
    const ggml_tensor * w = dst->src[1];
    float_gemm_thread(weights_of(w), w->ne[0], (const float *) x->data, (int64_t) (x->nb[1] / sizeof(float)), x->ne[1],
                      (float *) dst->data, (int64_t) (dst->nb[1] / sizeof(float)), gemm_best_isa(), ith, nth);
}

bool is_float_type(ggml_type t) { return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16; }

const char * family_of(ggml_type t) {
    return t == GGML_TYPE_F32 ? "GEMM f32 (ours)" : t == GGML_TYPE_F16 ? "GEMM f16 (ours)" : "GEMM bf16 (ours)";
}

}  // namespace

bool float_gemm_applies(const ggml_tensor * w, const ggml_tensor * x) {
    if (!is_float_type(w->type) || gemm::disabled_by_env() || x->ne[1] < 32) return false;
    const ggml_tensor * held = w->view_src ? w->view_src : w;  // the downsample kernel is a reshaped weight
    if (!held->buffer || !ggml_backend_buffer_is_host(held->buffer) || gemm::is_repacked(held)) return false;
    return ggml_n_dims(w) == 2 && ggml_is_contiguous(w) && x->type == GGML_TYPE_F32 && x->nb[0] == sizeof(float) &&
           x->ne[0] == w->ne[0] && x->ne[2] == 1 && x->ne[3] == 1 && gemm_available();
}

ggml_tensor * float_gemm_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
    ggml_tensor * args[2] = {x, w};
    ggml_tensor * out =
        ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], 1, 1, args, 2, float_gemm_op, GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(out, family_of(w->type));
    return out;
}

void float_gemm_run(ggml_type type, const void * w, int64_t n, int64_t k, const float * a, int64_t m, float * c, int n_threads,
                    gemm_isa isa) {
    if (!is_float_type(type)) throw invalid_argument(std::string("float gemm: ") + ggml_type_name(type) + " is not F32/F16/BF16");
    if (n <= 0 || m <= 0 || k <= 0) throw invalid_argument("float gemm: M, N and K must be positive");
    if (!gemm_available()) throw error("gemm: this CPU lacks AVX2/FMA/F16C");
    const float_weights fw{type, (const uint8_t *) w, (size_t) k * ggml_type_size(type), n};
    gemm::on_threads(n_threads, [&](int t, int nt) { float_gemm_thread(fw, k, a, k, m, c, n, isa, t, nt); });
}

bool float_gemm_node_info(const ggml_tensor * t, const char ** family, double * ops, const char ** peak) {
    // ggml keeps a custom op's function first in its op_params (ggml_custom_op_params, ggml-impl.h).
    // The node's name cannot tell: the graphs rename it for tensor dumps.
    ggml_custom_op_t fn = float_gemm_op;
    if (t->op != GGML_OP_CUSTOM || std::memcmp(t->op_params, &fn, sizeof fn) != 0 || !t->src[1]) return false;
    const ggml_type type = t->src[1]->type;
    *family = family_of(type);
    *ops = 2.0 * (double) t->src[1]->ne[0] * (double) t->ne[0] * (double) t->ne[1];
    const bool bf16_dot = type == GGML_TYPE_BF16 && gemm_isa_has_bf16(gemm_best_isa());
    *peak = bf16_dot ? (gemm_best_isa() == gemm_isa::amx ? "amx_bf16" : "bf16") : "f32";
    return true;
}

}  // namespace autoglm
