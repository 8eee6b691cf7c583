// The AVX-VNNI form of the block-32 kernel (gemm_block32.h): Q4_0, Q5_0, Q8_0, Q4_1 and Q5_1 weights
// against Q8_0 activations with the VEX-encoded vpdpbusd on 256-bit vectors, which Intel's client cores
// have since Alder Lake (and AMD's since Zen 5) without AVX-512: the laptops' instruction set.
//
// The panels are gemm_block32.h's (8 columns per vector, unpacked by the weight type's AVX2 code).
// vpdpbusd (4 unsigned weight bytes x 4 signed activation bytes into a 32-bit lane) replaces vpmaddubsw
// + vpaddw + vpmaddwd and has no 16-bit bound, so Q8_0's two 4-bit planes are joined back into one
// byte (u = 16 hi + lo) once per panel, and no type widens mid-block. The integer block sums are exact
// and the F32 steps are the AVX2 kernel's (each block's sum starts from the offset's share, then one
// fmadd of da x dw per block and row), so both produce the same bits.
// Include only where AUTOGLM_GEMM_X86 (gemm_panel.h) is set.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <memory>

#include "gemm_block32.h"
#include "gemm_panel.h"
#include "gemm_q8_act.h"

namespace autoglm::gemm {

// A two-plane panel (Q8_0: u = 16 hi + lo) as one plane of bytes, with its scales and offsets.
AUTOGLM_TARGET_AVX_VNNI inline void join_planes(const block32_panel<2> & two, int64_t nb, const block32_panel<1> & one) {
    for (int64_t b = 0; b < nb; ++b) {
        const __m256i * src = two.block(b);
        // hi is at most 15, so the 16-bit shift moves no bit into the next byte
        for (int t = 0; t < 8; ++t)
            _mm256_store_si256(one.v + b * 8 + t, _mm256_or_si256(_mm256_slli_epi16(src[t], 4), src[8 + t]));
    }
    std::copy(two.dw, two.dw + nb * 8, one.dw);
    std::copy(two.mw, two.mw + nb * 8, one.mw);
}

// R rows (rows[0..R-1]) x 2 panels side by side -> out[r * ldo + j], j < 16: block32_kernel's sums with
// one vpdpbusd per quad, row and panel.
template <bool affine, int R>
AUTOGLM_TARGET_AVX_VNNI inline void block32_avxvnni_kernel(const block32_panel<1> * const * pan, int64_t nb, const q8_0_rows & a,
                                                           const int64_t * rows, float * out, int ldo) {
    const int8_t * q[R];
    for (int r = 0; r < R; ++r) q[r] = a.q(rows[r]);
    __m256 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const __m256i *w0 = pan[0]->block(b), *w1 = pan[1]->block(b);
        __m256i dot[R][2];
        for (int r = 0; r < R; ++r)
            dot[r][0] = dot[r][1] = affine ? _mm256_setzero_si256() : _mm256_set1_epi32(a.corr(rows[r])[b]);
#pragma GCC unroll 8
        for (int t = 0; t < 8; ++t) {
            const __m256i u0 = _mm256_load_si256(w0 + t), u1 = _mm256_load_si256(w1 + t);
            for (int r = 0; r < R; ++r) {
                const __m256i x = _mm256_set1_epi32(quad(q[r] + b * q8_0_block + 4 * t));
                dot[r][0] = _mm256_dpbusd_avx_epi32(dot[r][0], u0, x);
                dot[r][1] = _mm256_dpbusd_avx_epi32(dot[r][1], u1, x);
            }
        }
        block32_f32_step<affine, R, 2>(dot, pan, b, a, rows, acc);
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < 2; ++c) _mm256_storeu_ps(out + r * ldo + 8 * c, acc[r][c]);
}

// Panels [p0, p1) of 8 columns for every row of q: the `panels_avx_vnni` of every block-32 kernel,
// unpack(c0, panel) filling an 8-column panel as for block32_panels. Groups of 4 panels, 3 rows x 2
// panels per kernel call as the AVX2 kernel's 4-bit types: 6 int32 sums, 6 F32 sums, 2 weight vectors
// and the broadcast are 15 of the 16 vector registers.
template <int planes, bool affine, class Unpack>
AUTOGLM_TARGET_AVX_VNNI void block32_avxvnni_panels(int64_t n, int64_t k, const uint8_t * q, int64_t m, float * c,
                                                    int64_t c_row_stride, int64_t p0, int64_t p1, Unpack unpack) {
    constexpr int R = 3, group = 4;  // (measured on M6: 4 rows no faster, 2 rows 15% slower)
    const int64_t nb = k / q8_0_block;
    const q8_0_rows a{const_cast<uint8_t *>(q), k, nb};
    std::unique_ptr<block32_panel_storage<planes>> two_planes;  // Q8_0's panel before its planes are joined
    if constexpr (planes == 2) two_planes = std::make_unique<block32_panel_storage<planes>>(nb);
    std::unique_ptr<block32_panel_storage<1>> st[group];
    for (auto & s : st) s = std::make_unique<block32_panel_storage<1>>(nb);
    paired_panel_loop<R, group>(
        n, m, c, c_row_stride, p0, p1,
        [&](int64_t c0, int i) {
            if constexpr (planes == 1) {
                unpack(c0, st[i]->panel);
            } else {
                unpack(c0, two_planes->panel);
                join_planes(two_planes->panel, nb, st[i]->panel);
            }
        },
        [&](int i) { st[i]->clear(nb); },
        [&](int i, const int64_t * rows, float * out, int ldo) {
            const block32_panel<1> * pan[2] = {&st[i]->panel, &st[i + 1]->panel};
            block32_avxvnni_kernel<affine, R>(pan, nb, a, rows, out, ldo);
        });
}

}  // namespace autoglm::gemm
