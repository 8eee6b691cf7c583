// ref: ggml-common.h block_q5_K and ggml-quants.c dequantize_row_q5_K (the layout: qs element l of
//      sub-block pair p in byte 32p + l, low nibble for sub-block 2p; its 5th bit is bit j of qh[l] for
//      sub-block j); ggml-cpu quants.c ggml_vec_dot_q5_K_q8_K (the arithmetic).
#include "gemm_q5_k.h"

#include <cstring>

#include "gemm_q4_k.h"  // q8_k_row_bytes
#include "ggml.h"

#if AUTOGLM_GEMM_X86
#    include "gemm_kquant_panel.h"
#    include "gemm_q8_act.h"  // gemm::quad
#    include "gemm_q8k_act.h"
#endif

namespace autoglm {

#if AUTOGLM_GEMM_X86
#    pragma GCC push_options
#    pragma GCC target("avx2,fma,f16c")
namespace {

using gemm::q8k_rows;
using gemm::kq::panel_block;
using gemm::kq::sub_blocks;
using gemm::kq::wide_block;

constexpr size_t scales_at = q5_k_scales_at, qh_at = q5_k_qh_at, qs_at = q5_k_qs_at;

void quantize(const float * a, size_t a_row_stride, int64_t k, int64_t r0, int64_t r1, uint8_t * q_bytes) {
    gemm::quantize_q8_k_rows(a, a_row_stride, r0, r1, q8k_rows{q_bytes, k, k / q5_k_block});
}

// Columns [c0, c0 + 8) of w (GGUF layout; fewer at the right edge: zero weights and scales) as
// unsigned 5-bit values.
void unpack_panel(const uint8_t * w, int64_t n, int64_t nb, int64_t c0, panel_block * panel) {
    const __m256i low = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    for (int64_t b = 0; b < nb; ++b) {
        panel_block & P = panel[b];
        auto block = [&](int c) { return w + ((c0 + c) * nb + b) * q5_k_block_bytes; };
        // bytes 32p .. 32p+31 of qs: low nibbles are sub-block 2p, high ones 2p+1; the 5th bits are
        // bits 2p and 2p+1 of qh
        for (int p = 0; p < 4; ++p) {
            __m256i lo[8], hi[8];
            for (int c = 0; c < 8; ++c) {
                __m256i qs = _mm256_setzero_si256(), qh = _mm256_setzero_si256();
                if (c0 + c < n) {
                    qs = _mm256_loadu_si256((const __m256i *) (block(c) + qs_at + 32 * p));
                    qh = _mm256_loadu_si256((const __m256i *) (block(c) + qh_at));
                }
                // (qh >> s) & 1 per byte: a 16-bit shift brings the high byte's bits into the low
                // byte's top, which the mask drops
                const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * p), one);
                const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * p + 1), one);
                lo[c] = _mm256_or_si256(_mm256_and_si256(qs, low), _mm256_slli_epi16(h0, 4));
                hi[c] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qs, 4), low), _mm256_slli_epi16(h1, 4));
            }
            gemm::transpose_columns(lo, P.q + 8 * (2 * p));
            gemm::transpose_columns(hi, P.q + 8 * (2 * p + 1));
        }
        int16_t sc[8][sub_blocks] = {}, mins[8][sub_blocks] = {};
        for (int c = 0; c < 8; ++c) {
            P.d[c] = P.dmin[c] = 0.0f;
            if (c0 + c >= n) continue;
            uint16_t hd, hm;
            std::memcpy(&hd, block(c), 2);
            std::memcpy(&hm, block(c) + 2, 2);
            P.d[c] = ggml_fp16_to_fp32(hd);
            P.dmin[c] = ggml_fp16_to_fp32(hm);
            for (int j = 0; j < sub_blocks; ++j) gemm::kq::scale_min(j, block(c) + scales_at, sc[c][j], mins[c][j]);
        }
        gemm::kq::set_scales(P, sc, mins);
    }
}

// Four rows (rows[0..3], possibly repeated at the bottom edge) x one panel -> out[4][8]. Four
// vpmaddubsw of 5-bit weights sum exactly in 16 bits (4 x 2 x 31 x 127 < 2^15), so each sub-block is
// widened in two halves, by its scale.
inline void kernel_4x8(const panel_block * panel, int64_t nb, const q8k_rows & a, const int64_t * rows, float out[4][8]) {
    const int8_t * q[4];
    for (int r = 0; r < 4; ++r) q[r] = a.q(rows[r]);
    __m256 acc[4], acc_min[4];
    for (int r = 0; r < 4; ++r) acc[r] = acc_min[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const panel_block & P = panel[b];
        __m256i isum[4], msum[4];
        for (int r = 0; r < 4; ++r) isum[r] = msum[r] = _mm256_setzero_si256();
        for (int j = 0; j < sub_blocks; ++j) {
            const int64_t k0 = b * q5_k_block + 32 * j;
            for (int h = 0; h < 2; ++h) {
                __m256i s[4];
                for (int r = 0; r < 4; ++r) s[r] = _mm256_setzero_si256();
                for (int t = 4 * h; t < 4 * h + 4; ++t) {
                    const __m256i wv = _mm256_load_si256(P.q + 8 * j + t);
                    for (int r = 0; r < 4; ++r) {
                        s[r] = _mm256_add_epi16(s[r], _mm256_maddubs_epi16(wv, _mm256_set1_epi32(gemm::quad(q[r] + k0 + 4 * t))));
                        asm("" : "+x"(s[r]));  // keep the chain (see gemm_q4_k.cpp)
                    }
                }
                for (int r = 0; r < 4; ++r) isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(s[r], P.sc[j]));
            }
        }
        const __m256 dw = _mm256_loadu_ps(P.d), dm = _mm256_loadu_ps(P.dmin);
        for (int r = 0; r < 4; ++r) {
            for (int p = 0; p < sub_blocks / 2; ++p) {
                int32_t pair;  // the activations' sums of sub-blocks 2p and 2p+1, as two int16
                std::memcpy(&pair, a.sums(rows[r]) + b * sub_blocks + 2 * p, 4);
                msum[r] = _mm256_add_epi32(msum[r], _mm256_madd_epi16(P.mins[p], _mm256_set1_epi32(pair)));
            }
            const __m256 dy = _mm256_set1_ps(a.d(rows[r])[b]);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_mul_ps(dw, dy), acc[r]);
            acc_min[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(msum[r]), _mm256_mul_ps(dm, dy), acc_min[r]);
        }
    }
    for (int r = 0; r < 4; ++r) _mm256_storeu_ps(out[r], _mm256_sub_ps(acc[r], acc_min[r]));
}

// Panels [p0, p1) of 8 columns for every row, 4 rows x one panel per call of kern (kernel_4x8 or
// kernel_avx_vnni).
template <class Kernel>
void panels_with(const uint8_t * w, int64_t n, int64_t k, const uint8_t * q, int64_t m, float * c, int64_t c_row_stride,
                 int64_t p0, int64_t p1, Kernel kern) {
    const q8k_rows a{const_cast<uint8_t *>(q), k, k / q5_k_block};
    const int64_t nb = k / q5_k_block;
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

// The AVX-512 VNNI form: 16 columns, both sub-blocks of a pair at once (2R vpdpbusd chains). The
// sub-block sums (|sum| <= 32 x 31 x 127) are scaled in F32, exactly: a pair's scaled total stays
// below 2 x 63 x 125,984 < 2^24, so it converts back to the int32 that kernel_4x8 sums.
template <int R>
AUTOGLM_TARGET_AVX512_VNNI inline void kernel_vnni(const wide_block * panel, int64_t nb, const q8k_rows & a, const int64_t * rows,
                                                   float out[R][16]) {
    const int8_t * q[R];
    for (int r = 0; r < R; ++r) q[r] = a.q(rows[r]);
    __m512 acc[R], acc_min[R];
    for (int r = 0; r < R; ++r) acc[r] = acc_min[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const wide_block & P = panel[b];
        __m512i isum[R], msum[R];
        for (int r = 0; r < R; ++r) isum[r] = msum[r] = _mm512_setzero_si512();
        for (int p = 0; p < sub_blocks / 2; ++p) {
            const int64_t k0 = b * q5_k_block + 64 * p;
            __m512i dot[2][R];
            for (int h = 0; h < 2; ++h)
                for (int r = 0; r < R; ++r) dot[h][r] = _mm512_setzero_si512();
            for (int t = 0; t < 8; ++t) {
                for (int h = 0; h < 2; ++h) {
                    const __m512i wv = _mm512_load_si512(P.q + 8 * (2 * p + h) + t);
                    for (int r = 0; r < R; ++r)
                        dot[h][r] = _mm512_dpbusd_epi32(dot[h][r], wv, _mm512_set1_epi32(gemm::quad(q[r] + k0 + 32 * h + 4 * t)));
                }
            }
            for (int r = 0; r < R; ++r) {
                const __m512 scaled = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[1][r]), P.sc[2 * p + 1],
                                                      _mm512_mul_ps(_mm512_cvtepi32_ps(dot[0][r]), P.sc[2 * p]));
                isum[r] = _mm512_add_epi32(isum[r], _mm512_cvtps_epi32(scaled));
                int32_t pair;
                std::memcpy(&pair, a.sums(rows[r]) + b * sub_blocks + 2 * p, 4);
                msum[r] = _mm512_add_epi32(msum[r], _mm512_madd_epi16(P.mins[p], _mm512_set1_epi32(pair)));
            }
        }
        const __m512 dw = _mm512_load_ps(P.d), dm = _mm512_load_ps(P.dmin);
        for (int r = 0; r < R; ++r) {
            const __m512 dy = _mm512_set1_ps(a.d(rows[r])[b]);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r]), _mm512_mul_ps(dw, dy), acc[r]);
            acc_min[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(msum[r]), _mm512_mul_ps(dm, dy), acc_min[r]);
        }
    }
    for (int r = 0; r < R; ++r) _mm512_storeu_ps(out[r], _mm512_sub_ps(acc[r], acc_min[r]));
}

AUTOGLM_TARGET_AVX512_VNNI void panels_vnni(const uint8_t * w, bool, int64_t n, int64_t k, const uint8_t * q, int64_t m,
                                            float * c, int64_t c_row_stride, int64_t p0, int64_t p1) {
    constexpr int rows_per_tile = 4;
    const q8k_rows a{const_cast<uint8_t *>(q), k, k / q5_k_block};
    const int64_t nb = a.nb;
    gemm::joined_panel_loop<panel_block, wide_block, rows_per_tile>(
        nb, n, m, c, c_row_stride, p0, p1, [&](int64_t c0, panel_block * panel) { unpack_panel(w, n, nb, c0, panel); },
        [&](const panel_block * lo, const panel_block * hi, wide_block * wide) { gemm::kq::join_panels(lo, hi, nb, wide); },
        [&](const wide_block * wide, const int64_t * rows, float out[rows_per_tile][16]) {
            kernel_vnni<rows_per_tile>(wide, nb, a, rows, out);
        });
}

// The AVX-VNNI form (256-bit vpdpbusd, laptop cores without AVX-512): kernel_vnni's arithmetic on one
// 8-column panel, 4 rows per call as kernel_4x8 (the same exact scaling, the same F32 steps: the same
// bits).
AUTOGLM_TARGET_AVX_VNNI inline void kernel_avx_vnni(const panel_block * panel, int64_t nb, const q8k_rows & a,
                                                    const int64_t * rows, float out[4][8]) {
    constexpr int R = 4;
    const __m256i low16 = _mm256_set1_epi32(0xFFFF);  // sc holds each scale twice, as two int16
    const int8_t * q[R];
    for (int r = 0; r < R; ++r) q[r] = a.q(rows[r]);
    __m256 acc[R], acc_min[R];
    for (int r = 0; r < R; ++r) acc[r] = acc_min[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const panel_block & P = panel[b];
        __m256i isum[R], msum[R];
        for (int r = 0; r < R; ++r) isum[r] = msum[r] = _mm256_setzero_si256();
        for (int p = 0; p < sub_blocks / 2; ++p) {
            const int64_t k0 = b * q5_k_block + 64 * p;
            __m256i dot[2][R];
            for (int h = 0; h < 2; ++h)
                for (int r = 0; r < R; ++r) dot[h][r] = _mm256_setzero_si256();
            for (int t = 0; t < 8; ++t) {
                for (int h = 0; h < 2; ++h) {
                    const __m256i wv = _mm256_load_si256(P.q + 8 * (2 * p + h) + t);
                    for (int r = 0; r < R; ++r)
                        dot[h][r] =
                            _mm256_dpbusd_avx_epi32(dot[h][r], wv, _mm256_set1_epi32(gemm::quad(q[r] + k0 + 32 * h + 4 * t)));
                }
            }
            const __m256 sc0 = _mm256_cvtepi32_ps(_mm256_and_si256(P.sc[2 * p], low16));
            const __m256 sc1 = _mm256_cvtepi32_ps(_mm256_and_si256(P.sc[2 * p + 1], low16));
            for (int r = 0; r < R; ++r) {
                const __m256 scaled =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[1][r]), sc1, _mm256_mul_ps(_mm256_cvtepi32_ps(dot[0][r]), sc0));
                isum[r] = _mm256_add_epi32(isum[r], _mm256_cvtps_epi32(scaled));
                int32_t pair;
                std::memcpy(&pair, a.sums(rows[r]) + b * sub_blocks + 2 * p, 4);
                msum[r] = _mm256_add_epi32(msum[r], _mm256_madd_epi16(P.mins[p], _mm256_set1_epi32(pair)));
            }
        }
        const __m256 dw = _mm256_loadu_ps(P.d), dm = _mm256_loadu_ps(P.dmin);
        for (int r = 0; r < R; ++r) {
            const __m256 dy = _mm256_set1_ps(a.d(rows[r])[b]);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_mul_ps(dw, dy), acc[r]);
            acc_min[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(msum[r]), _mm256_mul_ps(dm, dy), acc_min[r]);
        }
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(out[r], _mm256_sub_ps(acc[r], acc_min[r]));
}

AUTOGLM_TARGET_AVX_VNNI void panels_avx_vnni(const uint8_t * w, bool, int64_t n, int64_t k, const uint8_t * q, int64_t m,
                                             float * c, int64_t c_row_stride, int64_t p0, int64_t p1) {
    panels_with(w, n, k, q, m, c, c_row_stride, p0, p1, kernel_avx_vnni);
}

// The BF16 tile form (gemm_kquant_panel.h): q holds the activations as gemm_bf16_rows.h packs them.
AUTOGLM_TARGET_AMX_BF16_DEQUANT void panels_amx_bf16(const uint8_t * w, bool, int64_t n, int64_t k, const uint8_t * q, int64_t m,
                                                     float * c, int64_t c_row_stride, int64_t p0, int64_t p1) {
    gemm::kq::panels_amx_bf16(n, k, q, m, c, c_row_stride, p0, p1,
                              [&](int64_t c0, panel_block * panel) { unpack_panel(w, n, k / q5_k_block, c0, panel); });
}

}  // namespace
#    pragma GCC pop_options
#endif  // AUTOGLM_GEMM_X86

const gemm::kernel & gemm_q5_k_kernel() {
    static const gemm::kernel k{GGML_TYPE_Q5_K,
                                q5_k_block,
                                q8_k_row_bytes(q5_k_block),
                                false,
                                0,
                                "gemm_q5_K",
                                "gemm_q5_K_quantize",
                                "GEMM q5_K (ours)",
                                "GEMM q5_K rows to int8 (ours)",
                                AUTOGLM_GEMM_FN(quantize),
                                AUTOGLM_GEMM_FN(panels),
                                AUTOGLM_GEMM_FN(panels_vnni),
                                nullptr,
                                AUTOGLM_GEMM_FN(panels_avx_vnni),
                                AUTOGLM_GEMM_FN(panels_amx_bf16)};
    return k;
}

}  // namespace autoglm
