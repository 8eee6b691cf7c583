// ref: ggml-common.h block_q6_K and ggml-quants.c dequantize_row_q6_K (the layout: ql, qh, scales, d);
//      ggml-cpu quants.c ggml_vec_dot_q6_K_q8_K (the arithmetic).
#include "gemm_q6_k.h"

#include <cstring>
#include <vector>

#include "ggml.h"

#if AUTOGLM_GEMM_X86
#    include "gemm_dequant_tiles.h"
#    include "gemm_q8_act.h"  // gemm::quad
#    include "gemm_q8k_act.h"
#endif

namespace autoglm {

namespace {
constexpr int block = q6_k_block;
constexpr size_t block_bytes = q6_k_block_bytes;
constexpr size_t qh_at = q6_k_qh_at, scales_at = q6_k_scales_at, d_at = q6_k_d_at;
constexpr int sub_blocks = 16;
// per super-block of a row: q int8 x 256, d F32, s8 as int32 x 32 (VNNI) and as int16 x 32 (AVX2)
constexpr size_t act_block_bytes = block + 4 + (block / 8) * 4 + (block / 8) * 2;
}  // namespace

#if AUTOGLM_GEMM_X86
#    pragma GCC push_options
#    pragma GCC target("avx2,fma,f16c")
namespace {

// One token's activations per row: q int8[k] | d F32[k / 256] | s8 int32[k / 8] | s8 int16[k / 8],
// s8 = -32 x the sum of 8 consecutive q.
struct q6_act_rows {
    uint8_t * base;
    int64_t k, nb;
    size_t row_bytes() const { return (size_t) nb * act_block_bytes; }
    int8_t * q(int64_t r) const { return (int8_t *) (base + r * row_bytes()); }
    float * d(int64_t r) const { return (float *) (base + r * row_bytes() + k); }
    int32_t * s32(int64_t r) const { return (int32_t *) (base + r * row_bytes() + k + nb * 4); }
    int16_t * s16(int64_t r) const { return (int16_t *) (base + r * row_bytes() + k + nb * 4 + k / 2); }
};

void quantize(const float * a, size_t a_row_stride, int64_t k, int64_t r0, int64_t r1, uint8_t * q_bytes) {
    const q6_act_rows out{q_bytes, k, k / block};
    std::vector<uint8_t> one(gemm::q8k_rows::bytes(k));
    const gemm::q8k_rows row{one.data(), k, k / block};
    for (int64_t r = r0; r < r1; ++r) {
        gemm::quantize_q8_k_rows((const float *) ((const uint8_t *) a + r * a_row_stride), a_row_stride, 0, 1, row);
        std::memcpy(out.q(r), row.q(0), (size_t) k);
        std::memcpy(out.d(r), row.d(0), (size_t) out.nb * sizeof(float));
        for (int64_t g = 0; g < k / 8; ++g) {
            int32_t s = 0;
            for (int i = 0; i < 8; ++i) s += row.q(0)[8 * g + i];
            out.s32(r)[g] = -32 * s;
            out.s16(r)[g] = (int16_t) (-32 * s);  // |.| <= 32 x 8 x 127 < 2^15
        }
    }
}

// One super-block of a panel of 8 columns: u = w + 32 (0..63), vector t = k 4t .. 4t+3 of each column
// (32-bit lane c); sub-block j's scale as the int16 pair (sc, sc) in lane c.
struct panel_block {
    __m256i q[block / 4];
    __m256i sc[sub_blocks];
    float d[8];
};
static_assert(sizeof(panel_block) % 32 == 0, "panel blocks must keep 32-byte alignment");

// Columns [c0, c0 + 8) of w (GGUF layout; fewer at the right edge: zero weights and scales).
void unpack_panel(const uint8_t * w, int64_t n, int64_t nb, int64_t c0, panel_block * panel) {
    const __m256i low = _mm256_set1_epi8(0x0F), bits45 = _mm256_set1_epi8(0x30);
    for (int64_t b = 0; b < nb; ++b) {
        panel_block & P = panel[b];
        __m256i chunk[8][8];  // 32 consecutive u of column c: chunk[i][c] = elements 32i .. 32i+31
        alignas(32) int16_t sc[sub_blocks][16] = {};
        for (int c = 0; c < 8; ++c) {
            P.d[c] = 0.0f;
            if (c0 + c >= n) {
                for (int i = 0; i < 8; ++i) chunk[i][c] = _mm256_setzero_si256();
                continue;
            }
            const uint8_t * blk = w + ((c0 + c) * nb + b) * block_bytes;
            uint16_t h;
            std::memcpy(&h, blk + d_at, 2);
            P.d[c] = ggml_fp16_to_fp32(h);
            for (int j = 0; j < sub_blocks; ++j) sc[j][2 * c] = sc[j][2 * c + 1] = (int8_t) blk[scales_at + j];
            for (int half = 0; half < 2; ++half) {
                // elements 128 half + 32 i + l: ql's low nibbles (i = 0, 1) or high ones (2, 3) of byte
                // 64 half + 32 (i % 2) + l, with bits 2i, 2i + 1 of qh's byte 32 half + l
                const __m256i l0 = _mm256_loadu_si256((const __m256i *) (blk + 64 * half));
                const __m256i l1 = _mm256_loadu_si256((const __m256i *) (blk + 64 * half + 32));
                const __m256i qh = _mm256_loadu_si256((const __m256i *) (blk + qh_at + 32 * half));
                chunk[4 * half][c] =
                    _mm256_or_si256(_mm256_and_si256(l0, low), _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45));
                chunk[4 * half + 1][c] =
                    _mm256_or_si256(_mm256_and_si256(l1, low), _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45));
                chunk[4 * half + 2][c] =
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low), _mm256_and_si256(qh, bits45));
                chunk[4 * half + 3][c] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low),
                                                         _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45));
            }
        }
        for (int i = 0; i < 8; ++i) gemm::transpose_columns(chunk[i], P.q + 8 * i);
        for (int j = 0; j < sub_blocks; ++j) P.sc[j] = _mm256_load_si256((const __m256i *) sc[j]);
    }
}

// Four rows (rows[0..3], possibly repeated at the bottom edge) x one panel -> out[4][8].
inline void kernel_4x8(const panel_block * panel, int64_t nb, const q6_act_rows & a, const int64_t * rows, float out[4][8]) {
    const int8_t * q[4];
    const int16_t * s8[4];
    for (int r = 0; r < 4; ++r) {
        q[r] = a.q(rows[r]);
        s8[r] = a.s16(rows[r]);
    }
    __m256 acc[4];
    for (int r = 0; r < 4; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const panel_block & P = panel[b];
        __m256i isum[4];
        for (int r = 0; r < 4; ++r) isum[r] = _mm256_setzero_si256();
        for (int j = 0; j < sub_blocks; ++j) {
            for (int r = 0; r < 4; ++r) {
                const int8_t * qb = q[r] + b * block + 16 * j;
                const __m256i s01 = _mm256_add_epi16(_mm256_maddubs_epi16(P.q[4 * j], _mm256_set1_epi32(gemm::quad(qb))),
                                                     _mm256_maddubs_epi16(P.q[4 * j + 1], _mm256_set1_epi32(gemm::quad(qb + 4))));
                const __m256i s23 =
                    _mm256_add_epi16(_mm256_maddubs_epi16(P.q[4 * j + 2], _mm256_set1_epi32(gemm::quad(qb + 8))),
                                     _mm256_maddubs_epi16(P.q[4 * j + 3], _mm256_set1_epi32(gemm::quad(qb + 12))));
                int32_t offsets;  // s8 of the sub-block's two halves, as two int16
                std::memcpy(&offsets, s8[r] + b * (block / 8) + 2 * j, 4);
                const __m256i t = _mm256_add_epi32(_mm256_madd_epi16(s01, P.sc[j]), _mm256_madd_epi16(s23, P.sc[j]));
                isum[r] = _mm256_add_epi32(isum[r], _mm256_add_epi32(t, _mm256_madd_epi16(_mm256_set1_epi32(offsets), P.sc[j])));
            }
        }
        const __m256 dw = _mm256_loadu_ps(P.d);
        for (int r = 0; r < 4; ++r) {
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_mul_ps(dw, _mm256_set1_ps(a.d(rows[r])[b])), acc[r]);
        }
    }
    for (int r = 0; r < 4; ++r) _mm256_storeu_ps(out[r], acc[r]);
}

// Panels [p0, p1) of 8 columns for every row, 4 rows x one panel per call of kern (kernel_4x8 or
// kernel_avx_vnni<4>).
template <class Kernel>
void panels_with(const uint8_t * w, int64_t n, int64_t k, const uint8_t * q, int64_t m, float * c, int64_t c_row_stride,
                 int64_t p0, int64_t p1, Kernel kern) {
    const q6_act_rows a{const_cast<uint8_t *>(q), k, k / block};
    const int64_t nb = k / block;
    gemm::aligned_bytes panel_bytes((size_t) nb * sizeof(panel_block));
    auto * panel = panel_bytes.as<panel_block>();
    gemm::panel_loop<4, 8>(
        n, m, c, c_row_stride, p0, p1, [&](int64_t c0) { unpack_panel(w, n, nb, c0, panel); },
        [&](const int64_t * rows, float out[4][8]) { kern(panel, nb, a, rows, out); });
}

void panels(const uint8_t * w, bool, int64_t n, int64_t k, const uint8_t * q, int64_t m, float * c, int64_t c_row_stride,
            int64_t p0, int64_t p1) {
    panels_with(w, n, k, q, m, c, c_row_stride, p0, p1, kernel_4x8);
}

// The AVX-512 VNNI form: 16 columns (two panels joined).
struct wide_block {
    __m512i q[block / 4];
    __m512i sc[sub_blocks];
    float d[16];
};
static_assert(sizeof(wide_block) % 64 == 0, "wide blocks must keep 64-byte alignment");

AUTOGLM_TARGET_AVX512_VNNI void join_panels(const panel_block * lo_cols, const panel_block * hi_cols, int64_t nb,
                                            wide_block * wide) {
    for (int64_t b = 0; b < nb; ++b) {
        for (int t = 0; t < block / 4; ++t)
            wide[b].q[t] = _mm512_inserti64x4(_mm512_castsi256_si512(lo_cols[b].q[t]), hi_cols[b].q[t], 1);
        for (int j = 0; j < sub_blocks; ++j)
            wide[b].sc[j] = _mm512_inserti64x4(_mm512_castsi256_si512(lo_cols[b].sc[j]), hi_cols[b].sc[j], 1);
        std::memcpy(wide[b].d, lo_cols[b].d, sizeof lo_cols[b].d);
        std::memcpy(wide[b].d + 8, hi_cols[b].d, sizeof hi_cols[b].d);
    }
}

template <int R>
AUTOGLM_TARGET_AVX512_VNNI inline void kernel_vnni(const wide_block * panel, int64_t nb, const q6_act_rows & a,
                                                   const int64_t * rows, float out[R][16]) {
    const int8_t * q[R];
    const int32_t * s8[R];
    for (int r = 0; r < R; ++r) {
        q[r] = a.q(rows[r]);
        s8[r] = a.s32(rows[r]);
    }
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const wide_block & P = panel[b];
        __m512i isum[R];
        for (int r = 0; r < R; ++r) isum[r] = _mm512_setzero_si512();
        for (int j = 0; j < sub_blocks; ++j) {
            const __m512i w0 = _mm512_load_si512(P.q + 4 * j), w1 = _mm512_load_si512(P.q + 4 * j + 1);
            const __m512i w2 = _mm512_load_si512(P.q + 4 * j + 2), w3 = _mm512_load_si512(P.q + 4 * j + 3);
            for (int r = 0; r < R; ++r) {
                const int8_t * qb = q[r] + b * block + 16 * j;
                const int32_t * st = s8[r] + b * (block / 8) + 2 * j;
                __m512i h0 = _mm512_dpbusd_epi32(_mm512_set1_epi32(st[0]), w0, _mm512_set1_epi32(gemm::quad(qb)));
                h0 = _mm512_dpbusd_epi32(h0, w1, _mm512_set1_epi32(gemm::quad(qb + 4)));
                __m512i h1 = _mm512_dpbusd_epi32(_mm512_set1_epi32(st[1]), w2, _mm512_set1_epi32(gemm::quad(qb + 8)));
                h1 = _mm512_dpbusd_epi32(h1, w3, _mm512_set1_epi32(gemm::quad(qb + 12)));
                // h0 in the low int16 of each lane, h1 in the high one: both exact within int16
                const __m512i halves = _mm512_mask_blend_epi16(0xAAAAAAAA, h0, _mm512_slli_epi32(h1, 16));
                isum[r] = _mm512_dpwssd_epi32(isum[r], halves, P.sc[j]);
            }
        }
        const __m512 dw = _mm512_load_ps(P.d);
        for (int r = 0; r < R; ++r) {
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r]), _mm512_mul_ps(dw, _mm512_set1_ps(a.d(rows[r])[b])), acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) _mm512_storeu_ps(out[r], acc[r]);
}

AUTOGLM_TARGET_AVX512_VNNI void panels_vnni(const uint8_t * w, bool, int64_t n, int64_t k, const uint8_t * q, int64_t m,
                                            float * c, int64_t c_row_stride, int64_t p0, int64_t p1) {
    constexpr int rows_per_tile = 8;
    const q6_act_rows a{const_cast<uint8_t *>(q), k, k / block};
    const int64_t nb = a.nb;
    gemm::joined_panel_loop<panel_block, wide_block, rows_per_tile>(
        nb, n, m, c, c_row_stride, p0, p1, [&](int64_t c0, panel_block * panel) { unpack_panel(w, n, nb, c0, panel); },
        [&](const panel_block * lo, const panel_block * hi, wide_block * wide) { join_panels(lo, hi, nb, wide); },
        [&](const wide_block * wide, const int64_t * rows, float out[rows_per_tile][16]) {
            kernel_vnni<rows_per_tile>(wide, nb, a, rows, out);
        });
}

// The AVX-VNNI form (256-bit vpdpbusd and vpdpwssd, laptop cores without AVX-512): kernel_vnni's
// arithmetic on one 8-column panel, 4 rows per call as kernel_4x8: the same integers, the same F32
// steps, the same bits.
template <int R>
AUTOGLM_TARGET_AVX_VNNI inline void kernel_avx_vnni(const panel_block * panel, int64_t nb, const q6_act_rows & a,
                                                    const int64_t * rows, float out[R][8]) {
    const int8_t * q[R];
    const int32_t * s8[R];
    for (int r = 0; r < R; ++r) {
        q[r] = a.q(rows[r]);
        s8[r] = a.s32(rows[r]);
    }
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const panel_block & P = panel[b];
        __m256i isum[R];
        for (int r = 0; r < R; ++r) isum[r] = _mm256_setzero_si256();
        for (int j = 0; j < sub_blocks; ++j) {
            const __m256i w0 = _mm256_load_si256(P.q + 4 * j), w1 = _mm256_load_si256(P.q + 4 * j + 1);
            const __m256i w2 = _mm256_load_si256(P.q + 4 * j + 2), w3 = _mm256_load_si256(P.q + 4 * j + 3);
            for (int r = 0; r < R; ++r) {
                const int8_t * qb = q[r] + b * block + 16 * j;
                const int32_t * st = s8[r] + b * (block / 8) + 2 * j;
                __m256i h0 = _mm256_dpbusd_avx_epi32(_mm256_set1_epi32(st[0]), w0, _mm256_set1_epi32(gemm::quad(qb)));
                h0 = _mm256_dpbusd_avx_epi32(h0, w1, _mm256_set1_epi32(gemm::quad(qb + 4)));
                __m256i h1 = _mm256_dpbusd_avx_epi32(_mm256_set1_epi32(st[1]), w2, _mm256_set1_epi32(gemm::quad(qb + 8)));
                h1 = _mm256_dpbusd_avx_epi32(h1, w3, _mm256_set1_epi32(gemm::quad(qb + 12)));
                // h0 in the low int16 of each lane, h1 in the high one: both exact within int16
                const __m256i halves = _mm256_blend_epi16(h0, _mm256_slli_epi32(h1, 16), 0xAA);
                isum[r] = _mm256_dpwssd_avx_epi32(isum[r], halves, P.sc[j]);
            }
        }
        const __m256 dw = _mm256_loadu_ps(P.d);
        for (int r = 0; r < R; ++r) {
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_mul_ps(dw, _mm256_set1_ps(a.d(rows[r])[b])), acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(out[r], acc[r]);
}

AUTOGLM_TARGET_AVX_VNNI void panels_avx_vnni(const uint8_t * w, bool, int64_t n, int64_t k, const uint8_t * q, int64_t m,
                                             float * c, int64_t c_row_stride, int64_t p0, int64_t p1) {
    panels_with(w, n, k, q, m, c, c_row_stride, p0, p1, kernel_avx_vnni<4>);
}

// The BF16 tile form (gemm_dequant_tiles.h); q holds the activations as gemm_bf16_rows.h packs them.
// Block i of 32 k of super-block b is sub-blocks 2i and 2i + 1 (16 k each, a scale each), its weights
// w = (d x sc) x (u - 32) as ggml's dequantize_row_q6_K computes them (exact in F32).
AUTOGLM_TARGET_AMX_BF16_DEQUANT void panels_amx_bf16(const uint8_t * w, bool, int64_t n, int64_t k, const uint8_t * q, int64_t m,
                                                     float * c, int64_t c_row_stride, int64_t p0, int64_t p1) {
    const int64_t nb = k / block;
    gemm::joined_dequant_tile_panels<panel_block, wide_block>(
        nb, n, k, q, m, c, c_row_stride, p0, p1, [&](int64_t c0, panel_block * panel) { unpack_panel(w, n, nb, c0, panel); },
        [&](const panel_block * lo, const panel_block * hi, wide_block * wide) { join_panels(lo, hi, nb, wide); },
        [&](const wide_block * wide, auto tile) AUTOGLM_TARGET_AMX_BF16_DEQUANT {
            for (int64_t b = 0; b < nb; ++b) {
                const __m512 d = _mm512_loadu_ps(wide[b].d);
                for (int i = 0; i < block / 32; ++i) {
                    alignas(64) float dw[2][16], mw[2][16];
                    for (int h = 0; h < 2; ++h) {  // sc[j]: the int8 scale in both int16 halves of lane c
                        const __m512i sc = _mm512_srai_epi32(_mm512_slli_epi32(wide[b].sc[2 * i + h], 16), 16);
                        const __m512 dsc = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));
                        _mm512_store_ps(dw[h], dsc);
                        _mm512_store_ps(mw[h], _mm512_mul_ps(dsc, _mm512_set1_ps(-32.0f)));
                    }
                    gemm::quads_to_bf16_tile(wide[b].q + 8 * i, dw[0], mw[0], dw[1], mw[1], tile(b * (block / 32) + i));
                }
            }
        });
}

}  // namespace
#    pragma GCC pop_options
#endif  // AUTOGLM_GEMM_X86

const gemm::kernel & gemm_q6_k_kernel() {
    static const gemm::kernel k{GGML_TYPE_Q6_K,
                                block,
                                act_block_bytes,
                                false,
                                0,
                                "gemm_q6_K",
                                "gemm_q6_K_quantize",
                                "GEMM q6_K (ours)",
                                "GEMM q6_K rows to int8 (ours)",
                                AUTOGLM_GEMM_FN(quantize),
                                AUTOGLM_GEMM_FN(panels),
                                AUTOGLM_GEMM_FN(panels_vnni),
                                nullptr,
                                AUTOGLM_GEMM_FN(panels_avx_vnni),
                                AUTOGLM_GEMM_FN(panels_amx_bf16)};
    return k;
}

}  // namespace autoglm
