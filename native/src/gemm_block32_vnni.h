// The AVX-512 VNNI form of the block-32 kernel (gemm_block32.h): Q4_0, Q5_0 and Q8_0 weights against
// Q8_0 activations, 16 columns per 512-bit vector.
//
// vpdpbusd multiplies 4 unsigned weight bytes by 4 signed activation bytes and adds the four products
// into a 32-bit lane. That replaces vpmaddubsw + vpaddw + vpmaddwd and has no 16-bit bound, so every
// weight type needs one plane: u = w + offset in 0..255 (Q8_0's two 4-bit planes become 16 hi + lo
// again). The 4 activation bytes of a quad are broadcast to every lane.
//
// A group of 16 columns is two of gemm_block32.h's 8-column panels, unpacked by the weight type's own
// AVX2 code and then joined, so the layouts are written once. The integer block sums are exact in
// both kernels and the F32 steps are the same (each block's int32 sum starts from the offset's share,
// then one fmadd of da x dw per block and row), so both produce the same bits.
// Include only where AUTOGLM_GEMM_X86 (gemm_panel.h) is set.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <vector>

#include "gemm_block32.h"
#include "gemm_panel.h"
#include "gemm_q8_act.h"

namespace autoglm::gemm {

// 16 columns: per block 8 vectors (vector t: k = 4t .. 4t+3 of each column, columns 0-7 in the low
// 256 bits) and the columns' F32 scales dw[b * 16 + c] (and an affine type's offsets mw).
struct block32_wide_panel {
    aligned_bytes v_bytes;
    std::vector<float> dw, mw;
    explicit block32_wide_panel(int64_t nb)
        : v_bytes((size_t) nb * 8 * sizeof(__m512i)), dw((size_t) nb * 16), mw((size_t) nb * 16) {}
    __m512i * v() { return v_bytes.as<__m512i>(); }
};

// Joins two 8-column panels (columns c0 .. c0+7 and c0+8 .. c0+15) into the wide one; a two-plane
// panel (Q8_0: u = 16 hi + lo) becomes one plane again.
template <int planes>
AUTOGLM_TARGET_AVX512_VNNI inline void join_panels(const block32_panel<planes> & lo_cols, const block32_panel<planes> & hi_cols,
                                                   int64_t nb, __m512i * v, float * dw, float * mw) {
    for (int64_t b = 0; b < nb; ++b) {
        for (int t = 0; t < 8; ++t) {
            __m256i half[2];
            const block32_panel<planes> * src[2] = {&lo_cols, &hi_cols};
            for (int h = 0; h < 2; ++h) {
                const __m256i * blk = src[h]->block(b);
                half[h] = planes == 2 ? _mm256_or_si256(_mm256_slli_epi16(blk[t], 4), blk[8 + t]) : blk[t];
            }
            _mm512_store_si512(v + b * 8 + t, _mm512_inserti64x4(_mm512_castsi256_si512(half[0]), half[1], 1));
        }
        for (int c = 0; c < 8; ++c) {
            dw[b * 16 + c] = lo_cols.dw[b * 8 + c];
            dw[b * 16 + 8 + c] = hi_cols.dw[b * 8 + c];
            mw[b * 16 + c] = lo_cols.mw[b * 8 + c];
            mw[b * 16 + 8 + c] = hi_cols.mw[b * 8 + c];
        }
    }
}

// R rows x 16 columns: out[r][c] = sum_b da * dw * (corr + sum_k q * u), corr = -offset * sum(q) (an
// affine type: the sum without corr, then + mw * (da * sum(q)), as block32_kernel).
template <int R, bool affine>
AUTOGLM_TARGET_AVX512_VNNI inline void block32_vnni_kernel(const __m512i * v, const float * dw, const float * mw, int64_t nb,
                                                           const q8_0_rows & a, const int64_t * rows, float out[R][16]) {
    const int8_t * q[R];
    const float * da[R];
    const int32_t * corr[R];
    for (int r = 0; r < R; ++r) {
        q[r] = a.q(rows[r]);
        da[r] = a.d(rows[r]);
        corr[r] = a.corr(rows[r]);
    }
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        // two chains per row (even and odd quads): vpdpbusd has a latency of 5 and two issue per cycle,
        // so R chains of 8 would leave the units idle; each row's first chain starts from the offset's
        // share (a broadcast load, no arithmetic)
        __m512i even[R], odd[R];
        for (int r = 0; r < R; ++r) {
            even[r] = affine ? _mm512_setzero_si512() : _mm512_set1_epi32(corr[r][b]);
            odd[r] = _mm512_setzero_si512();
        }
        const int8_t * qb[R];
        for (int r = 0; r < R; ++r) qb[r] = q[r] + b * q8_0_block;
        for (int t = 0; t < 8; t += 2) {  // (a fixed index per chain: GCC keeps both in registers)
            const __m512i w0 = _mm512_load_si512(v + b * 8 + t), w1 = _mm512_load_si512(v + b * 8 + t + 1);
            for (int r = 0; r < R; ++r) {
                even[r] = _mm512_dpbusd_epi32(even[r], w0, _mm512_set1_epi32(quad(qb[r] + 4 * t)));
                odd[r] = _mm512_dpbusd_epi32(odd[r], w1, _mm512_set1_epi32(quad(qb[r] + 4 * t + 4)));
            }
        }
        const __m512 dwv = _mm512_loadu_ps(dw + b * 16);
        for (int r = 0; r < R; ++r) {
            const __m512i d = _mm512_add_epi32(even[r], odd[r]);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(dwv, _mm512_set1_ps(da[r][b])), acc[r]);
            if constexpr (affine) {
                acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(mw + b * 16), _mm512_set1_ps(affine_row_scale(a, rows[r], b)), acc[r]);
            }
        }
    }
    for (int r = 0; r < R; ++r) _mm512_storeu_ps(out[r], acc[r]);
}

// Panels [p0, p1) of 8 columns, 16 at a time, for every row of q: the `panels_avx512_vnni` of every
// block-32 kernel. unpack(c0, panel) fills an 8-column panel as for block32_panels.
template <int planes, bool affine, class Unpack>
AUTOGLM_TARGET_AVX512_VNNI void block32_vnni_panels(int64_t n, int64_t k, const uint8_t * q, int64_t m, float * c,
                                                    int64_t c_row_stride, int64_t p0, int64_t p1, Unpack unpack) {
    constexpr int rows_per_tile = 8;  // 8 accumulator pairs: each weight vector serves 8 vpdpbusd
    const int64_t nb = k / q8_0_block;
    const q8_0_rows a{const_cast<uint8_t *>(q), k, nb};
    block32_panel_storage<planes> lo_cols(nb), hi_cols(nb);
    block32_wide_panel wide(nb);
    __m512i * v = wide.v();
    panel_loop<rows_per_tile, 16>(
        n, m, c, c_row_stride, p0, p1,
        [&](int64_t c0) {
            unpack(c0, lo_cols.panel);
            unpack(c0 + 8, hi_cols.panel);
            join_panels<planes>(lo_cols.panel, hi_cols.panel, nb, v, wide.dw.data(), wide.mw.data());
        },
        [&](const int64_t * rows, float out[rows_per_tile][16]) {
            block32_vnni_kernel<rows_per_tile, affine>(v, wide.dw.data(), wide.mw.data(), nb, a, rows, out);
        });
}

}  // namespace autoglm::gemm
