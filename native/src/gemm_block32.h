// The kernel our block-32 GEMMs share (Q4_0, Q5_0, Q8_0 weights against Q8_0 activations,
// gemm_q8_act.h): a panel of 8 weight columns unpacked once into unsigned bytes u = w + offset, one
// 32-byte vector per 4 consecutive k of the 8 columns (4 bytes per column), reused for every row of
// the micro-batch. Each vpmaddubsw (u unsigned, 4 activation bytes broadcast) makes 8 columns x 2
// pairs; `quads_per_widen` of them are summed in 16 bits before one vpmaddwd widens them, as far as
// the bound allows (|sum| <= quads x 2 x u_max x 127 < 2^15), and the offset comes off as offset x
// sum(q) per row and block (q8_0_rows::corr). A weight type whose u does not fit in 4 or 5 bits (Q8_0) is split into
// planes: u = 16 * hi + lo, each plane a panel of its own, weighted 16 and 1 when widened. The affine
// types (Q4_1, Q5_1: w = dw * u + mw, u unsigned) add mw x (da x sum(q)) per block, their rows
// quantized with offset -1 so that corr holds sum(q).
// Include only where AUTOGLM_GEMM_X86 (gemm_panel.h) is set.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "block32_x16.h"
#include "gemm_panel.h"
#include "gemm_q8_act.h"
#include "ggml.h"

namespace autoglm::gemm {

// The panel of 8 columns: per block, `planes` x 8 vectors (plane p's vector t at [b][p * 8 + t]), and
// the columns' F32 scales dw[b * 8 + c] (and an affine type's offsets mw[b * 8 + c]).
template <int planes>
struct block32_panel {
    __m256i * v;
    float * dw;
    float * mw;
    const __m256i * block(int64_t b) const { return v + b * planes * 8; }
};

// An affine type's share of a block for one row: mw x (da x sum(q)), sum(q) kept in corr. The same
// F32 steps in the GEMMs and the GEMV (gemv_block32.cpp), so both give a token the same bits.
inline float affine_row_scale(const q8_0_rows & a, int64_t row, int64_t b) { return a.d(row)[b] * (float) a.corr(row)[b]; }

// 32 5th bits as bytes: 16 where bit j of the 32 bits at `at` is set, for byte j. The bits are a GGUF
// block's qh (elements 0..31) or half of one of block32_x16.h's masks (8 rows x 4 elements).
__attribute__((target("avx2"))) inline __m256i fifth_bits(const uint8_t * at) {
    // byte j takes byte j / 8 of the mask (each 128-bit lane has all four), then tests its bit j % 8
    const __m256i spread =
        _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((int64_t) 0x8040201008040201ULL);
    int32_t m;
    std::memcpy(&m, at, 4);
    const __m256i set = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(m), spread), bit);
    return _mm256_and_si256(_mm256_cmpeq_epi8(set, bit), _mm256_set1_epi8(16));
}

// Columns [c0, c0 + 8) of a matrix in block32_x16.h's layout (n a multiple of 16, so never an edge):
// chunk c of a record holds, for 8 consecutive rows, exactly the panel's vectors for k = 4c .. 4c+3 (low
// nibbles) and 16 + 4c .. (high nibbles), one row per 32-bit lane; the masks add the 5th bits.
template <ggml_type T>
__attribute__((target("avx2,fma,f16c"))) void unpack_x16_panel(const uint8_t * w, int64_t nb, int64_t c0,
                                                               const block32_panel<1> & panel) {
    constexpr x16_layout l = *x16_layout_of(T);
    const __m256i low = _mm256_set1_epi8(0x0F);
    const int h = (int) (c0 % x16_rows) / 8;  // which 8 rows of the record
    const uint8_t * rec = w + (size_t) (c0 / x16_rows * nb) * l.record_bytes;
    for (int64_t b = 0; b < nb; ++b, rec += l.record_bytes) {
        __m256i * v = panel.v + b * 8;
        for (int c = 0; c < 4; ++c) {
            const __m256i qs = _mm256_loadu_si256((const __m256i *) (rec + l.qs_at + 64 * c + 32 * h));
            v[c] = _mm256_and_si256(qs, low);
            v[4 + c] = _mm256_and_si256(_mm256_srli_epi16(qs, 4), low);
            if constexpr (l.masks_at != 0) {
                v[c] = _mm256_or_si256(v[c], fifth_bits(rec + l.masks_at + 16 * c + 4 * h));
                v[4 + c] = _mm256_or_si256(v[4 + c], fifth_bits(rec + l.masks_at + 16 * c + 8 + 4 * h));
            }
        }
        _mm256_storeu_ps(panel.dw + b * 8, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (rec + 16 * h))));
        const __m256 mw =
            l.m_at ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (rec + l.m_at + 16 * h))) : _mm256_setzero_ps();
        _mm256_storeu_ps(panel.mw + b * 8, mw);
    }
}

// Columns [c0, c0 + 8) of a block-32 matrix of type T whose values are nibbles (Q4_1, Q5_0, Q5_1;
// fewer columns at the right edge: zero weights, scales and offsets), as their unsigned u. A GGUF block
// (x16_layout's src_ offsets) holds elements 0..15 in the low nibbles of its 16 qs bytes and 16..31 in
// the high ones, plus 16 x bit j of its 32-bit qh where it has one; the F16 scale at 0, and an affine
// type's F16 m. `interleaved`: w is in block32_x16.h's layout (unpack_x16_panel).
template <ggml_type T>
__attribute__((target("avx2,fma,f16c"))) void unpack_nibble_panel(const uint8_t * w, bool interleaved, int64_t n, int64_t nb,
                                                                  int64_t c0, const block32_panel<1> & panel) {
    constexpr x16_layout l = *x16_layout_of(T);
    constexpr bool affine = l.src_m != 0, five_bits = l.src_qh != 0;
    if (interleaved) return unpack_x16_panel<T>(w, nb, c0, panel);
    const __m128i low = _mm_set1_epi8(0x0F);
    for (int64_t b = 0; b < nb; ++b) {
        __m256i v[8];
        for (int c = 0; c < 8; ++c) {
            panel.dw[b * 8 + c] = panel.mw[b * 8 + c] = 0.0f;
            v[c] = _mm256_setzero_si256();
            if (c0 + c >= n) continue;
            const uint8_t * blk = w + ((c0 + c) * nb + b) * l.block_bytes;
            uint16_t h;
            std::memcpy(&h, blk, 2);
            panel.dw[b * 8 + c] = ggml_fp16_to_fp32(h);
            if constexpr (affine) {
                std::memcpy(&h, blk + l.src_m, 2);
                panel.mw[b * 8 + c] = ggml_fp16_to_fp32(h);
            }
            const __m128i qs = _mm_loadu_si128((const __m128i *) (blk + l.src_qs));
            v[c] = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), low), _mm_and_si128(qs, low));
            if constexpr (five_bits) v[c] = _mm256_or_si256(v[c], fifth_bits(blk + l.src_qh));
        }
        transpose_columns(v, panel.v + b * 8);
    }
}

// Block b's F32 step for R rows x P panels: acc += float(dot) x (dw x da) (+ mw x (da x sum(q)) for an
// affine type), one fmadd per block and row as ggml's block kernels; every 256-bit kernel (AVX2's
// below, AVX-VNNI's) ends each block with it, so they give the same bits.
template <bool affine, int R, int P, int planes>
__attribute__((target("avx2,fma,f16c"))) inline void block32_f32_step(const __m256i (&dot)[R][P],
                                                                      const block32_panel<planes> * const * pan, int64_t b,
                                                                      const q8_0_rows & a, const int64_t * rows,
                                                                      __m256 (&acc)[R][P]) {
    for (int c = 0; c < P; ++c) {
        const __m256 dwv = _mm256_loadu_ps(pan[c]->dw + b * 8);
        for (int r = 0; r < R; ++r) {
            acc[r][c] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[r][c]), _mm256_mul_ps(dwv, _mm256_set1_ps(a.d(rows[r])[b])), acc[r][c]);
            if constexpr (affine) {
                acc[r][c] = _mm256_fmadd_ps(_mm256_loadu_ps(pan[c]->mw + b * 8), _mm256_set1_ps(affine_row_scale(a, rows[r], b)),
                                            acc[r][c]);
            }
        }
    }
}

// R rows (rows[0..R-1]) x P panels side by side -> out[r * ldo + j], j < 8P: C = sum_b da * dw * (corr + sum_k q * u),
// corr = -offset * sum(q), accumulated per block in F32 as ggml's block kernels do (one fmadd per block
// and row); for an affine type C = sum_b (da * dw * sum_k q * u + mw * (da * sum(q))), two fmadds. Each
// broadcast of 4 activation bytes serves P x planes vpmaddubsw. The F32 steps of every (R, P) are the
// same, so the shape a caller picks does not change a bit.
template <int planes, int quads_per_widen, bool affine, int R, int P>
__attribute__((target("avx2,fma,f16c"))) inline void block32_kernel(const block32_panel<planes> * const * pan, int64_t nb,
                                                                    const q8_0_rows & a, const int64_t * rows, float * out,
                                                                    int ldo) {
    static_assert(8 % quads_per_widen == 0, "a block is 8 quads");
    const __m256i weight[2] = {_mm256_set1_epi16(planes == 2 ? 16 : 1), _mm256_set1_epi16(1)};
    const int8_t * q[R];
    for (int r = 0; r < R; ++r) q[r] = a.q(rows[r]);
    __m256 acc[R][P];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < P; ++c) acc[r][c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const __m256i * wv[P];
        for (int c = 0; c < P; ++c) wv[c] = pan[c]->block(b);
        __m256i dot[R][P];  // the offset's share plus each widened group (formed at the first: fewer live registers)
#pragma GCC unroll 2
        for (int t0 = 0; t0 < 8; t0 += quads_per_widen) {
            __m256i s[planes][R][P];
            for (int p = 0; p < planes; ++p)
                for (int r = 0; r < R; ++r)
                    for (int c = 0; c < P; ++c) s[p][r][c] = _mm256_setzero_si256();
            // unrolled, so that the sums stay in registers (GCC keeps the arrays on the stack otherwise)
#pragma GCC unroll 8
            for (int t = t0; t < t0 + quads_per_widen; ++t) {
                __m256i w[P][planes];
                for (int c = 0; c < P; ++c)
                    for (int p = 0; p < planes; ++p) w[c][p] = _mm256_load_si256(wv[c] + p * 8 + t);
                for (int r = 0; r < R; ++r) {
                    // one broadcast of 4 activation bytes serves every panel and plane
                    const __m256i x = _mm256_set1_epi32(quad(q[r] + b * q8_0_block + 4 * t));
                    for (int c = 0; c < P; ++c)
                        for (int p = 0; p < planes; ++p) {
                            s[p][r][c] = _mm256_add_epi16(s[p][r][c], _mm256_maddubs_epi16(w[c][p], x));
                            // keep the sum a chain: GCC otherwise reassociates the adds into a tree whose
                            // partial sums spill to the stack (measured: half the speed)
                            asm("" : "+x"(s[p][r][c]));
                        }
                }
            }
            for (int r = 0; r < R; ++r)
                for (int c = 0; c < P; ++c) {
                    __m256i wide = _mm256_madd_epi16(s[0][r][c], weight[planes == 2 ? 0 : 1]);
                    if constexpr (planes == 2) wide = _mm256_add_epi32(wide, _mm256_madd_epi16(s[1][r][c], weight[1]));
                    const __m256i start = t0 > 0   ? dot[r][c]
                                          : affine ? _mm256_setzero_si256()
                                                   : _mm256_set1_epi32(a.corr(rows[r])[b]);
                    dot[r][c] = _mm256_add_epi32(start, wide);
                }
        }
        block32_f32_step<affine, R, P>(dot, pan, b, a, rows, acc);
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < P; ++c) _mm256_storeu_ps(out + r * ldo + 8 * c, acc[r][c]);
}

// A panel's memory for K/32 blocks.
template <int planes>
struct block32_panel_storage {
    aligned_bytes v_bytes;
    std::vector<float> dw, mw;
    block32_panel<planes> panel;
    explicit block32_panel_storage(int64_t nb)
        : v_bytes((size_t) nb * planes * 8 * sizeof(__m256i)),
          dw((size_t) nb * 8),
          mw((size_t) nb * 8),
          panel{v_bytes.as<__m256i>(), dw.data(), mw.data()} {}
    // no columns: zero weights, scales and offsets (a group's panel past the thread's last)
    void clear(int64_t nb) {
        std::memset(panel.v, 0, (size_t) nb * planes * 8 * sizeof(__m256i));
        std::fill(dw.begin(), dw.end(), 0.0f);
        std::fill(mw.begin(), mw.end(), 0.0f);
    }
};

// One-plane types that widen once per block: paired_panel_loop over groups of 4 panels (32 columns),
// 3 rows x 2 panels per kernel call (bench/README.md: on a 2-core Zen 1, 1.15-1.3x the rate of 4 rows
// x one panel). A panel past the thread's last is zeroed, not unpacked (the interleaved layout's
// unpacker reads no further than n).
template <int quads_per_widen, bool affine, class Unpack>
__attribute__((target("avx2,fma,f16c"))) void block32_grouped_panels(int64_t n, int64_t nb, const q8_0_rows & a, int64_t m,
                                                                     float * c, int64_t c_row_stride, int64_t p0, int64_t p1,
                                                                     Unpack unpack) {
    // 3 rows x 2 panels: 6 int16 sums, 6 F32 sums, 2 weight vectors and the broadcast in registers
    constexpr int R = 3, group = 4;
    std::unique_ptr<block32_panel_storage<1>> st[group];
    for (auto & s : st) s = std::make_unique<block32_panel_storage<1>>(nb);
    paired_panel_loop<R, group>(
        n, m, c, c_row_stride, p0, p1, [&](int64_t c0, int i) { unpack(c0, st[i]->panel); }, [&](int i) { st[i]->clear(nb); },
        [&](int i, const int64_t * rows, float * out, int ldo) {
            const block32_panel<1> * pan[2] = {&st[i]->panel, &st[i + 1]->panel};
            block32_kernel<1, quads_per_widen, affine, R, 2>(pan, nb, a, rows, out, ldo);
        });
}

// Panels [p0, p1) of 8 columns for every row of the quantized activations q (gemm_q8_act.h), each
// panel filled by unpack(c0, panel): the `panels` function of every block-32 kernel. Types whose
// block widens once (4-bit u: Q4_0, Q4_1) take two panels per call; the others keep one: Q8_0's two
// planes need twice the int16 sums, and the 5-bit types' second widening six more int32 sums, which
// spill (measured on Zen 1: no faster than one panel).
template <int planes, int quads_per_widen, bool affine, class Unpack>
__attribute__((target("avx2,fma,f16c"))) void block32_panels(int64_t n, int64_t k, const uint8_t * q, int64_t m, float * c,
                                                             int64_t c_row_stride, int64_t p0, int64_t p1, Unpack unpack) {
    const int64_t nb = k / q8_0_block;
    const q8_0_rows a{const_cast<uint8_t *>(q), k, nb};
    if constexpr (planes == 1 && quads_per_widen == 8) {
        block32_grouped_panels<quads_per_widen, affine>(n, nb, a, m, c, c_row_stride, p0, p1, unpack);
    } else {
        block32_panel_storage<planes> st(nb);
        const block32_panel<planes> * pan[1] = {&st.panel};
        panel_loop<4, 8>(
            n, m, c, c_row_stride, p0, p1, [&](int64_t c0) { unpack(c0, st.panel); },
            [&](const int64_t * rows, float out[4][8]) {
                block32_kernel<planes, quads_per_widen, affine, 4, 1>(pan, nb, a, rows, out[0], 8);
            });
    }
}

}  // namespace autoglm::gemm
