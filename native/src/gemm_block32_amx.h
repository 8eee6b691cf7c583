// The AMX-INT8 form of the block-32 kernel (gemm_block32.h, gemm_block32_vnni.h): Q4_0, Q5_0, Q8_0,
// Q4_1 and Q5_1 weights against Q8_0 activations, 32 rows x 32 columns per step, on Intel's tile unit
// (Sapphire Rapids and later; cpu_amx.h says whether this process may use it).
//
// Every block of 32 k has its own scales, so the tile unit does one block at a time: the activation
// tiles (16 rows x 32 bytes, read in place from the quantized rows) times the weight tiles (8 rows of
// 16 columns x 4 bytes: exactly one block of the VNNI kernel's 16-column panel) into four 16 x 16
// int32 tiles, stored and scaled into the F32 sums by AVX-512. The weights are made signed once per
// panel (u - offset, so tdpbssd needs no correction term; the affine types keep u unsigned and use
// tdpbsud), so each block's integer sum is the exact integer the AVX2 and VNNI kernels form, and the
// F32 steps are theirs (one fmadd of da x dw per block and row): all three give the same bits.
// Include only where AUTOGLM_GEMM_X86 (gemm_panel.h) is set.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_amx.h"
#include "gemm_block32_vnni.h"

#define AUTOGLM_TARGET_AMX_INT8 __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

namespace autoglm::gemm {

// Tiles 0-3: the int32 sums of rows 16i .. 16i+15 x columns 16j .. 16j+15 in tile 2i + j; 4 and 5: the
// activations of rows 0-15 and 16-31 for one block; 6 and 7: the weights of columns 0-15 and 16-31.
inline amx_tile_config block32_amx_tiles() {
    amx_tile_config cfg;
    for (int t = 0; t < 4; ++t) cfg.set(t, 16, 64);
    cfg.set(4, 16, q8_0_block);
    cfg.set(5, 16, q8_0_block);
    cfg.set(6, q8_0_block / 4, 64);
    cfg.set(7, q8_0_block / 4, 64);
    return cfg;
}

// One block's int32 sums (tiles 0-3 stored in sums) scaled into the F32 sums.
template <bool affine>
AUTOGLM_TARGET_AMX_INT8 inline void block32_amx_scale(const int32_t (*sums)[16][16], const float * const dw[2],
                                                      const float * const mw[2], int64_t b, const q8_0_rows & a,
                                                      const int64_t * rows, const float * const * da, float out[32][32]) {
#pragma GCC unroll 2
    for (int j = 0; j < 2; ++j) {
        const __m512 dwv = _mm512_loadu_ps(dw[j] + b * 16);
#pragma GCC unroll 32
        for (int r = 0; r < 32; ++r) {
            float * o = out[r] + 16 * j;
            const __m512 d = _mm512_cvtepi32_ps(_mm512_load_si512(sums[2 * (r / 16) + j][r % 16]));
            __m512 acc = _mm512_fmadd_ps(d, _mm512_mul_ps(dwv, _mm512_set1_ps(da[r][b])), _mm512_loadu_ps(o));
            if constexpr (affine) {
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(mw[j] + b * 16), _mm512_set1_ps(affine_row_scale(a, rows[r], b)), acc);
            }
            _mm512_storeu_ps(o, acc);
        }
    }
}

// 32 rows x 32 columns: out[r][c] = sum_b da * dw * (sum_k q * w) (+ mw x (da x sum(q)) for an affine
// type). a_tiles: the 32 rows' quantized bytes in tile order (block b's 32 rows x 32 bytes at b * 1024:
// each activation tile is 512 contiguous bytes); rows[r]: the row whose scales row r uses. v[j], dw[j],
// mw[j]: the two 16-column panels. The tiles of block b are stored while block b - 1 is scaled (two
// buffers), so the tile unit and the vector units overlap.
template <bool affine>
AUTOGLM_TARGET_AMX_INT8 inline void block32_amx_kernel(const __m512i * const v[2], const float * const dw[2],
                                                       const float * const mw[2], int64_t nb, const int8_t * a_tiles,
                                                       const q8_0_rows & a, const int64_t * rows, float out[32][32]) {
    alignas(64) int32_t sums[2][4][16][16];
    for (int r = 0; r < 32; ++r) {
        _mm512_storeu_ps(out[r], _mm512_setzero_ps());
        _mm512_storeu_ps(out[r] + 16, _mm512_setzero_ps());
    }
    const float * da[32];
    for (int r = 0; r < 32; ++r) da[r] = a.d(rows[r]);
    for (int64_t b = 0; b < nb; ++b) {
        _tile_loadd(4, a_tiles + b * 32 * q8_0_block, q8_0_block);
        _tile_loadd(5, a_tiles + b * 32 * q8_0_block + 16 * q8_0_block, q8_0_block);
        _tile_loadd(6, v[0] + b * 8, 64);
        _tile_loadd(7, v[1] + b * 8, 64);
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        if constexpr (affine) {  // u unsigned
            _tile_dpbsud(0, 4, 6);
            _tile_dpbsud(1, 4, 7);
            _tile_dpbsud(2, 5, 6);
            _tile_dpbsud(3, 5, 7);
        } else {
            _tile_dpbssd(0, 4, 6);
            _tile_dpbssd(1, 4, 7);
            _tile_dpbssd(2, 5, 6);
            _tile_dpbssd(3, 5, 7);
        }
        int32_t (*s)[16][16] = sums[b & 1];
        _tile_stored(0, s[0], 64);
        _tile_stored(1, s[1], 64);
        _tile_stored(2, s[2], 64);
        _tile_stored(3, s[3], 64);
        if (b > 0) block32_amx_scale<affine>(sums[(b - 1) & 1], dw, mw, b - 1, a, rows, da, out);
    }
    block32_amx_scale<affine>(sums[(nb - 1) & 1], dw, mw, nb - 1, a, rows, da, out);
}

// v[i] -= offset byte by byte: a panel's u = w + offset back to the signed w (mod 256, so Q8_0's w +
// 128 too).
AUTOGLM_TARGET_AMX_INT8 inline void to_signed(__m512i * v, int64_t n, int offset) {
    const __m512i off = _mm512_set1_epi8((char) offset);
    for (int64_t i = 0; i < n; ++i) v[i] = _mm512_sub_epi8(v[i], off);
}

// Panels [p0, p1) of 8 columns, 32 at a time, for every row of q: the `panels_amx` of every block-32
// kernel, `offset` the weight type's (u = w + offset; unused for an affine type). unpack(c0, panel)
// fills an 8-column panel as for block32_panels. The groups of 32 columns are unpacked a few at a
// time (as many as keep about 1 MiB of weights), and each tile of 32 rows is multiplied by all of them
// in turn: its activations (32 x K bytes) are then read from memory once per few groups, not once
// per group, and the unpacked weights stay in the core's L2 for every row.
template <int planes, int offset, bool affine, class Unpack>
AUTOGLM_TARGET_AMX_INT8 void block32_amx_panels(int64_t n, int64_t k, const uint8_t * q, int64_t m, float * c,
                                                int64_t c_row_stride, int64_t p0, int64_t p1, Unpack unpack) {
    const int64_t nb = k / q8_0_block;
    const q8_0_rows a{const_cast<uint8_t *>(q), k, nb};
    const int64_t c_end = std::min(n, p1 * 8);
    const int64_t groups = std::max<int64_t>(1, std::min<int64_t>(8, (int64_t(1) << 20) / (32 * k)));
    block32_panel_storage<planes> lo_cols(nb), hi_cols(nb);
    std::vector<block32_wide_panel> wide;
    wide.reserve((size_t) (2 * groups));
    for (int64_t i = 0; i < 2 * groups; ++i) wide.emplace_back(nb);
    // every tile of 32 rows in tile order, once per call (the last tile's rows past m repeat row m - 1):
    // an activation tile is then 8 whole cache lines, not 16 halves a row apart
    // (kept per thread from call to call: a fresh buffer's pages would be faulted in every time)
    const int64_t row_tiles = (m + 31) / 32;
    thread_local std::vector<int8_t> a_bytes;
    if (a_bytes.size() < (size_t) (row_tiles * 32 * k) + 64) a_bytes.resize((size_t) (row_tiles * 32 * k) + 64);
    int8_t * a_tiles = (int8_t *) (((uintptr_t) a_bytes.data() + 63) & ~(uintptr_t) 63);
    for (int64_t t = 0; t < row_tiles; ++t) {
        for (int r = 0; r < 32; ++r) {
            const int8_t * src = a.q(std::min(32 * t + r, m - 1));
            int8_t * dst = a_tiles + t * 32 * k + r * q8_0_block;
            for (int64_t b = 0; b < nb; ++b) std::memcpy(dst + b * 32 * q8_0_block, src + b * q8_0_block, q8_0_block);
        }
    }
    alignas(64) float out[32][32];
    amx_load_tiles(block32_amx_tiles());
    for (int64_t c0 = p0 * 8; c0 < c_end; c0 += 32 * groups) {
        const int64_t ng = std::min(groups, (c_end - c0 + 31) / 32);
        for (int64_t g = 0; g < ng; ++g) {
            for (int j = 0; j < 2; ++j) {
                block32_wide_panel & w = wide[(size_t) (2 * g + j)];
                unpack(c0 + 32 * g + 16 * j, lo_cols.panel);
                unpack(c0 + 32 * g + 16 * j + 8, hi_cols.panel);
                join_panels<planes>(lo_cols.panel, hi_cols.panel, nb, w.v(), w.dw.data(), w.mw.data());
                if constexpr (!affine) to_signed(w.v(), nb * 8, offset);
            }
        }
        for (int64_t m0 = 0; m0 < m; m0 += 32) {
            int64_t rows[32];
            for (int r = 0; r < 32; ++r) rows[r] = std::min(m0 + r, m - 1);
            const int8_t * a_q = a_tiles + m0 * k;
            for (int64_t g = 0; g < ng; ++g) {
                block32_wide_panel &w0 = wide[(size_t) (2 * g)], &w1 = wide[(size_t) (2 * g + 1)];
                const __m512i * v[2] = {w0.v(), w1.v()};
                const float * dw[2] = {w0.dw.data(), w1.dw.data()};
                const float * mw[2] = {w0.mw.data(), w1.mw.data()};
                block32_amx_kernel<affine>(v, dw, mw, nb, a_q, a, rows, out);
                const int64_t cg = c0 + 32 * g, nc = std::min<int64_t>(32, c_end - cg);
                for (int64_t r = 0; r < 32 && m0 + r < m; ++r) {
                    std::memcpy(c + (m0 + r) * c_row_stride + cg, out[r], (size_t) nc * sizeof(float));
                }
            }
        }
    }
    amx_release_tiles();
}

}  // namespace autoglm::gemm
