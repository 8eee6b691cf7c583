// ref: ggml-quants.c dequantize_row_q4_K / get_scale_min_k4 (weights); ggml-cpu repack.cpp
//      make_block_q4_Kx8 (the repacked layout read here) and ggml_vec_dot_q4_K_q8_K (the arithmetic).
#include "gemm_q4_k.h"

#include <cstring>

#include "gemm_panel.h"
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
using gemm::kq::join_panels;
using gemm::kq::panel_block;
using gemm::kq::scale_min;
using gemm::kq::sub_blocks;
using gemm::kq::wide_block;

void quantize(const float * a, size_t a_row_stride, int64_t k, int64_t r0, int64_t r1, uint8_t * q_bytes) {
    gemm::quantize_q8_k_rows(a, a_row_stride, r0, r1, q8k_rows{q_bytes, k, k / q4_k_block});
}

// Columns [c0, c0 + 8) of w (fewer at the right edge: zero weights and scales). `repacked`: ggml's
// CPU_REPACK layout for Q4_K on x86 (block_q4_Kx8 per 8 columns and super-block: 8 d, 8 dmin, then per
// sub-block 12 bytes holding the 8 columns' (scale, min) in Q4_K's own 6-bit packing, then the nibble
// bytes in chunks of 8: bytes 8i .. 8i+7 of columns 0..7, for i = 0..15); else the GGUF layout.
void unpack_panel(const uint8_t * w, int64_t n, int64_t nb, int64_t c0, bool repacked, panel_block * panel) {
    constexpr size_t x8_bytes = 16 * 2 + 96 + 1024;  // one block_q4_Kx8
    const __m256i low = _mm256_set1_epi8(0x0F);
    for (int64_t b = 0; b < nb; ++b) {
        panel_block & P = panel[b];
        const uint8_t * x8 = w + ((c0 / 8) * nb + b) * x8_bytes;
        auto block = [&](int c) { return w + ((c0 + c) * nb + b) * q4_k_block_bytes; };
        // bytes 32cc .. 32cc+31 of a column: low nibbles are sub-block 2cc, high ones 2cc+1
        for (int cc = 0; cc < 4; ++cc) {
            __m256i lo[8], hi[8];
            for (int c = 0; c < 8; ++c) {
                __m256i bytes = _mm256_setzero_si256();
                if (c0 + c < n) {
                    if (repacked) {
                        const uint8_t * qs = x8 + 128 + 8 * c;
                        int64_t part[4];
                        for (int i = 0; i < 4; ++i) std::memcpy(&part[i], qs + 64 * (4 * cc + i), 8);
                        bytes = _mm256_setr_epi64x(part[0], part[1], part[2], part[3]);
                    } else {
                        bytes = _mm256_loadu_si256((const __m256i *) (block(c) + 16 + 32 * cc));
                    }
                }
                lo[c] = _mm256_and_si256(bytes, low);
                hi[c] = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low);
            }
            gemm::transpose_columns(lo, P.q + 8 * (2 * cc));
            gemm::transpose_columns(hi, P.q + 8 * (2 * cc + 1));
        }
        int16_t sc[8][sub_blocks] = {}, mins[8][sub_blocks] = {};
        for (int c = 0; c < 8; ++c) {
            P.d[c] = P.dmin[c] = 0.0f;
            if (c0 + c >= n) continue;
            uint16_t hd, hm;
            std::memcpy(&hd, repacked ? x8 + 2 * c : block(c), 2);
            std::memcpy(&hm, repacked ? x8 + 16 + 2 * c : block(c) + 2, 2);
            P.d[c] = ggml_fp16_to_fp32(hd);
            P.dmin[c] = ggml_fp16_to_fp32(hm);
            for (int j = 0; j < sub_blocks; ++j) {
                if (repacked) {
                    scale_min(c, x8 + 32 + 12 * j, sc[c][j], mins[c][j]);
                } else {
                    scale_min(j, block(c) + 4, sc[c][j], mins[c][j]);
                }
            }
        }
        gemm::kq::set_scales(P, sc, mins);
    }
}

// The F32 step of sub-blocks 2p and 2p+1 of super-block b for R rows x P panels: the scaled sums
// (isum, the exact integers as F32) and the mins' share into two accumulators, as ggml's kernel; the
// AVX2 and AVX-VNNI kernels below both end each pair with it.
template <int R, int P>
inline void pair_step(const __m256 (&isum)[R][P], const panel_block * const (&blk)[P], int64_t b, int p, const q8k_rows & a,
                      const int64_t * rows, __m256 (&acc)[R][P], __m256 (&acc_min)[R][P]) {
    for (int r = 0; r < R; ++r) {
        const __m256 dy = _mm256_set1_ps(a.d(rows[r])[b]);
        int32_t pair;  // the sums of sub-blocks 2p and 2p+1, as two int16
        std::memcpy(&pair, a.sums(rows[r]) + b * sub_blocks + 2 * p, 4);
        for (int c = 0; c < P; ++c) {
            const __m256i ms = _mm256_madd_epi16(blk[c]->mins[p], _mm256_set1_epi32(pair));
            acc[r][c] = _mm256_fmadd_ps(isum[r][c], _mm256_mul_ps(_mm256_loadu_ps(blk[c]->d), dy), acc[r][c]);
            acc_min[r][c] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(ms), _mm256_mul_ps(_mm256_loadu_ps(blk[c]->dmin), dy), acc_min[r][c]);
        }
    }
}

// R rows (rows[0..R-1], possibly repeated at the bottom edge) x P panels side by side -> out[r * ldo
// + j], j < 8P. Each broadcast of 4 activation bytes serves P vpmaddubsw.
//
// The F32 steps are ggml's (ggml_gemm_q4_K_8x8_q8_K), so that the results equal its kernel's bit for
// bit (the integer sums are the same): per pair of sub-blocks one fmadd of the scaled sums and one of
// the mins' into two accumulators, subtracted at the end. Summed per super-block instead, a float
// difference of 1e-6 flipped one activation's int8 rounding a layer later and moved a logit by 0.46
// on a test model: quantized paths amplify any difference. They are the same for every (R, P).
template <int R, int P>
inline void kernel(const panel_block * const * pan, int64_t nb, const q8k_rows & a, const int64_t * rows, float * out, int ldo) {
    const int8_t * q[R];
    for (int r = 0; r < R; ++r) q[r] = a.q(rows[r]);
    __m256 acc[R][P], acc_min[R][P];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < P; ++c) acc[r][c] = acc_min[r][c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const panel_block * blk[P];
        for (int c = 0; c < P; ++c) blk[c] = pan[c] + b;
        for (int p = 0; p < sub_blocks / 2; ++p) {
            __m256i isum[R][P];
            for (int j = 2 * p; j < 2 * p + 2; ++j) {
                __m256i s[R][P];
                for (int r = 0; r < R; ++r)
                    for (int c = 0; c < P; ++c) s[r][c] = _mm256_setzero_si256();
                const int64_t k0 = b * q4_k_block + 32 * j;
                // unrolled, so that the sums stay in registers (GCC keeps the arrays on the stack otherwise)
#    pragma GCC unroll 8
                for (int t = 0; t < 8; ++t) {
                    __m256i wv[P];
                    for (int c = 0; c < P; ++c) wv[c] = _mm256_load_si256(blk[c]->q + 8 * j + t);
                    for (int r = 0; r < R; ++r) {
                        const __m256i x = _mm256_set1_epi32(gemm::quad(q[r] + k0 + 4 * t));
                        for (int c = 0; c < P; ++c) {
                            s[r][c] = _mm256_add_epi16(s[r][c], _mm256_maddubs_epi16(wv[c], x));
                            // keep the sum a chain: GCC otherwise reassociates the 8 adds into a tree whose
                            // partial sums spill to the stack (measured: half the speed)
                            asm("" : "+x"(s[r][c]));
                        }
                    }
                }
                // widen with the sub-block scales as the multipliers: sc * (pair0 + pair1) per column
                for (int r = 0; r < R; ++r)
                    for (int c = 0; c < P; ++c) {
                        const __m256i wide = _mm256_madd_epi16(s[r][c], blk[c]->sc[j]);
                        isum[r][c] = j == 2 * p ? wide : _mm256_add_epi32(isum[r][c], wide);
                    }
            }
            __m256 fsum[R][P];
            for (int r = 0; r < R; ++r)
                for (int c = 0; c < P; ++c) fsum[r][c] = _mm256_cvtepi32_ps(isum[r][c]);
            pair_step<R, P>(fsum, blk, b, p, a, rows, acc, acc_min);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < P; ++c) _mm256_storeu_ps(out + r * ldo + 8 * c, _mm256_sub_ps(acc[r][c], acc_min[r][c]));
}

// Panels [p0, p1) of 8 columns for every row with a 3-row x 2-panel kernel (kernel or kernel_avx_vnni);
// c row r starts at c + r * c_row_stride (floats). Groups of 4 panels, 3 rows x 2 panels per kernel
// call (gemm_panel.h paired_panel_loop; as the block-32 GEMMs, gemm_block32.h): 6 int16 and 6 int32
// sums, 2 weight vectors and the broadcast in registers.
template <class Kernel>
void paired_panels(const uint8_t * w, bool repacked, int64_t n, int64_t k, const uint8_t * q, int64_t m, float * c,
                   int64_t c_row_stride, int64_t p0, int64_t p1, Kernel kern) {
    const q8k_rows a{const_cast<uint8_t *>(q), k, k / q4_k_block};
    const int64_t nb = k / q4_k_block;
    constexpr int group = 4;
    gemm::aligned_bytes panel_bytes((size_t) group * nb * sizeof(panel_block));
    panel_block * panel = panel_bytes.as<panel_block>();  // panel i at panel + i * nb
    gemm::paired_panel_loop<3, group>(
        n, m, c, c_row_stride, p0, p1, [&](int64_t c0, int i) { unpack_panel(w, n, nb, c0, repacked, panel + i * nb); },
        [&](int i) { std::memset((void *) (panel + i * nb), 0, (size_t) nb * sizeof(panel_block)); },
        [&](int i, const int64_t * rows, float * out, int ldo) {
            const panel_block * pan[2] = {panel + i * nb, panel + (i + 1) * nb};
            kern(pan, nb, a, rows, out, ldo);
        });
}

void panels(const uint8_t * w, bool repacked, int64_t n, int64_t k, const uint8_t * q, int64_t m, float * c, int64_t c_row_stride,
            int64_t p0, int64_t p1) {
    paired_panels(w, repacked, n, k, q, m, c, c_row_stride, p0, p1, kernel<3, 2>);
}

// The AVX-512 VNNI form: 16 columns, two of the panels above joined per super-block. vpdpbusd sums a
// sub-block's 8 quads straight into int32 (no 16-bit bound), so the scales cannot ride on a widening
// multiply. They are applied in F32, exactly: |sum| <= 32 x 15 x 127 and scale <= 63, so each product
// and the pair's total stay below 2^24, and cvt(s0) * sc0 + cvt(s1) * sc1 is the integer that
// vpmaddwd gives on AVX2 (two conversions, a multiply and an fmadd where vpmulld would take 4 uops
// and still need the add and the conversion). The other F32 steps are kernel's: the same bits.
// R rows x 16 columns (gemm_kquant_panel.h's wide_block).
template <int R>
AUTOGLM_TARGET_AVX512_VNNI inline void kernel_vnni(const wide_block * panel, int64_t nb, const q8k_rows & a, const int64_t * rows,
                                                   float out[R][16]) {
    const int8_t * q[R];
    for (int r = 0; r < R; ++r) q[r] = a.q(rows[r]);
    __m512 acc[R], acc_min[R];
    for (int r = 0; r < R; ++r) acc[r] = acc_min[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const wide_block & P = panel[b];
        const __m512 dw = _mm512_load_ps(P.d), dm = _mm512_load_ps(P.dmin);
        __m512 dw_dy[R], dm_dy[R];
        for (int r = 0; r < R; ++r) {
            const __m512 dy = _mm512_set1_ps(a.d(rows[r])[b]);
            dw_dy[r] = _mm512_mul_ps(dw, dy);
            dm_dy[r] = _mm512_mul_ps(dm, dy);
        }
        for (int p = 0; p < sub_blocks / 2; ++p) {
            // both sub-blocks of the pair at once: 2R independent chains of vpdpbusd (latency 5,
            // two per cycle) where one sub-block at a time left the core waiting on R chains
            const int64_t k0 = b * q4_k_block + 64 * p;
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
                const __m512 isum =  // exact (see above)
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[1][r]), P.sc[2 * p + 1],
                                    _mm512_mul_ps(_mm512_cvtepi32_ps(dot[0][r]), P.sc[2 * p]));
                int32_t pair;  // the sums of sub-blocks 2p and 2p+1, as two int16
                std::memcpy(&pair, a.sums(rows[r]) + b * sub_blocks + 2 * p, 4);
                const __m512i ms = _mm512_madd_epi16(P.mins[p], _mm512_set1_epi32(pair));
                acc[r] = _mm512_fmadd_ps(isum, dw_dy[r], acc[r]);
                acc_min[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ms), dm_dy[r], acc_min[r]);
            }
        }
    }
    for (int r = 0; r < R; ++r) _mm512_storeu_ps(out[r], _mm512_sub_ps(acc[r], acc_min[r]));
}

AUTOGLM_TARGET_AVX512_VNNI void panels_vnni(const uint8_t * w, bool repacked, int64_t n, int64_t k, const uint8_t * q, int64_t m,
                                            float * c, int64_t c_row_stride, int64_t p0, int64_t p1) {
    constexpr int rows_per_tile = 4;
    const q8k_rows a{const_cast<uint8_t *>(q), k, k / q4_k_block};
    const int64_t nb = a.nb;
    gemm::joined_panel_loop<panel_block, wide_block, rows_per_tile>(
        nb, n, m, c, c_row_stride, p0, p1, [&](int64_t c0, panel_block * panel) { unpack_panel(w, n, nb, c0, repacked, panel); },
        [&](const panel_block * lo, const panel_block * hi, wide_block * wide) { join_panels(lo, hi, nb, wide); },
        [&](const wide_block * wide, const int64_t * rows, float out[rows_per_tile][16]) {
            kernel_vnni<rows_per_tile>(wide, nb, a, rows, out);
        });
}

// The AVX-VNNI form (256-bit vpdpbusd, laptop cores without AVX-512): kernel's panels and shape, each
// sub-block's 8 quads summed straight into int32 and the scales applied in F32, exactly, as
// kernel_vnni does (the same bound), so the bits are kernel's.
template <int R, int P>
AUTOGLM_TARGET_AVX_VNNI inline void kernel_avx_vnni(const panel_block * const * pan, int64_t nb, const q8k_rows & a,
                                                    const int64_t * rows, float * out, int ldo) {
    const int8_t * q[R];
    for (int r = 0; r < R; ++r) q[r] = a.q(rows[r]);
    __m256 acc[R][P], acc_min[R][P];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < P; ++c) acc[r][c] = acc_min[r][c] = _mm256_setzero_ps();
    const __m256i low16 = _mm256_set1_epi32(0xFFFF);  // sc holds each scale twice, as two int16
    for (int64_t b = 0; b < nb; ++b) {
        const panel_block * blk[P];
        for (int c = 0; c < P; ++c) blk[c] = pan[c] + b;
        for (int p = 0; p < sub_blocks / 2; ++p) {
            __m256 isum[R][P];
            for (int j = 2 * p; j < 2 * p + 2; ++j) {
                __m256i dot[R][P];
                for (int r = 0; r < R; ++r)
                    for (int c = 0; c < P; ++c) dot[r][c] = _mm256_setzero_si256();
                const int64_t k0 = b * q4_k_block + 32 * j;
#    pragma GCC unroll 8
                for (int t = 0; t < 8; ++t) {
                    __m256i wv[P];
                    for (int c = 0; c < P; ++c) wv[c] = _mm256_load_si256(blk[c]->q + 8 * j + t);
                    for (int r = 0; r < R; ++r) {
                        const __m256i x = _mm256_set1_epi32(gemm::quad(q[r] + k0 + 4 * t));
                        for (int c = 0; c < P; ++c) dot[r][c] = _mm256_dpbusd_avx_epi32(dot[r][c], wv[c], x);
                    }
                }
                for (int c = 0; c < P; ++c) {
                    const __m256 sc = _mm256_cvtepi32_ps(_mm256_and_si256(blk[c]->sc[j], low16));
                    for (int r = 0; r < R; ++r) {  // exact (kernel_vnni)
                        const __m256 s = _mm256_cvtepi32_ps(dot[r][c]);
                        isum[r][c] = j == 2 * p ? _mm256_mul_ps(s, sc) : _mm256_fmadd_ps(s, sc, isum[r][c]);
                    }
                }
            }
            pair_step<R, P>(isum, blk, b, p, a, rows, acc, acc_min);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < P; ++c) _mm256_storeu_ps(out + r * ldo + 8 * c, _mm256_sub_ps(acc[r][c], acc_min[r][c]));
}

AUTOGLM_TARGET_AVX_VNNI void panels_avx_vnni(const uint8_t * w, bool repacked, int64_t n, int64_t k, const uint8_t * q, int64_t m,
                                             float * c, int64_t c_row_stride, int64_t p0, int64_t p1) {
    paired_panels(w, repacked, n, k, q, m, c, c_row_stride, p0, p1, kernel_avx_vnni<3, 2>);
}

// The BF16 tile form (gemm_kquant_panel.h): q holds the activations as gemm_bf16_rows.h packs them.
AUTOGLM_TARGET_AMX_BF16_DEQUANT void panels_amx_bf16(const uint8_t * w, bool repacked, int64_t n, int64_t k, const uint8_t * q,
                                                     int64_t m, float * c, int64_t c_row_stride, int64_t p0, int64_t p1) {
    gemm::kq::panels_amx_bf16(n, k, q, m, c, c_row_stride, p0, p1,
                              [&](int64_t c0, panel_block * panel) { unpack_panel(w, n, k / q4_k_block, c0, repacked, panel); });
}

}  // namespace
#    pragma GCC pop_options
#endif  // AUTOGLM_GEMM_X86

const gemm::kernel & gemm_q4_k_kernel() {
    static const gemm::kernel k{GGML_TYPE_Q4_K,
                                q4_k_block,
                                q8_k_row_bytes(q4_k_block),
                                true,
                                0,
                                "gemm_q4_K",
                                "gemm_q4_K_quantize",
                                "GEMM q4_K (ours)",
                                "GEMM q4_K rows to int8 (ours)",
                                AUTOGLM_GEMM_FN(quantize),
                                AUTOGLM_GEMM_FN(panels),
                                AUTOGLM_GEMM_FN(panels_vnni),
                                nullptr,
                                AUTOGLM_GEMM_FN(panels_avx_vnni),
                                AUTOGLM_GEMM_FN(panels_amx_bf16)};
    return k;
}

}  // namespace autoglm
