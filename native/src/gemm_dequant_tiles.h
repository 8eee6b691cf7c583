// ref: ggml-cpu's MUL_MAT for quantized weights (ggml_compute_forward_mul_mat with the types' vec_dot
// kernels), which this replaces for prompts on CPUs with AMX; the blocking is gemm_float_amx.cpp's.
//
// The BF16 tile form of our quantized GEMMs (the block-32 types, Q4_K, Q5_K, Q6_K): the weights
// dequantized to BF16 as they are unpacked, the activations rounded to BF16 (gemm_bf16_rows.h), and
// tdpbf16ps summing 32 rows x 32 columns over the whole of K. The int8 tiles (gemm_block32_amx.h) give
// the bits of the AVX2 kernel but must store every block's sums, since each block of 32 k has its own
// scales; these store nothing until K is done and do twice the work per tile load, so they run faster
// where the product has enough rows to pay for the dequantization (gemm.h: amx_bf16_min_rows_block32, _kquant).
//
// Not the same bits: each weight is first computed in F32 as ggml's dequantization does (dw x u + mw
// from the type's unsigned u, with dw and mw exact products of its scales: exact in F32), then rounded
// to BF16 (relative error 2^-9), each activation too, where the int8 path rounds the activations to 8
// bits per block and keeps the weights exact. The bound against the exact product is tested
// (test_gemm_block32.py, test_gemm_q4_k.py).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "amx_bf16_tile.h"
#include "gemm_bf16_rows.h"
#include "gemm_panel.h"

#define AUTOGLM_TARGET_AMX_BF16_DEQUANT \
    __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16,avx512vnni,avx2,fma,f16c")))

namespace autoglm::gemm {

// One block of 32 k of a 16-column panel into one weight tile (row p = pair p of the block: k 2p and
// 2p + 1, for the 16 columns). v: its 8 vectors, byte 4c + j of vector t = column c's unsigned u at k
// 4t + j; the weights are w = dw x u + mw, with (dw, mw) per column from dw0/mw0 for k 0..15 and from
// dw1/mw1 for k 16..31 (one pair for a type whose scales cover 32 k, two for Q6_K's 16).
AUTOGLM_TARGET_AMX_BF16_DEQUANT inline void quads_to_bf16_tile(const __m512i * v, const float * dw0, const float * mw0,
                                                               const float * dw1, const float * mw1, uint32_t * tile) {
    const float * dws[2] = {dw0, dw1};
    const float * mws[2] = {mw0, mw1};
    __m512 d[2][4], base[2][4];
    for (int h = 0; h < 2; ++h) {
        const __m512 dwv = _mm512_loadu_ps(dws[h]), mwv = _mm512_loadu_ps(mws[h]);
        for (int q = 0; q < 4; ++q) {  // lane i of the 16 int32 from bytes 16q .. 16q+15: column 4q + i / 4
            const __m512i col =
                _mm512_add_epi32(_mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 2),
                                 _mm512_set1_epi32(4 * q));
            d[h][q] = _mm512_permutexvar_ps(col, dwv);
            base[h][q] = _mm512_permutexvar_ps(col, mwv);
        }
    }
    // a row of the tile: the first (even) or second (odd) pair of each column's four k, columns 0-7 from
    // lo and 8-15 from hi (32-bit unit 2c + h of a converted half holds column c's pair h)
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int t = 0; t < 8; ++t) {
        const int h = t / 4;
        const __m128i * bytes = (const __m128i *) (v + t);
        __m512 f[4];
        for (int q = 0; q < 4; ++q) {  // one rounding: dw x u + mw as the exact value rounded to F32
            f[q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_load_si128(bytes + q))), d[h][q], base[h][q]);
        }
        const __m512i lo = (__m512i) _mm512_cvtne2ps_pbh(f[1], f[0]), hi = (__m512i) _mm512_cvtne2ps_pbh(f[3], f[2]);
        _mm512_store_si512((__m512i *) (tile + 2 * t * 16), _mm512_permutex2var_epi32(lo, even, hi));
        _mm512_store_si512((__m512i *) (tile + (2 * t + 1) * 16), _mm512_permutex2var_epi32(lo, odd, hi));
    }
}

// Panels [p0, p1) of 8 columns, 32 at a time, for every row of the packed activations q
// (gemm_bf16_rows.h): the `panels_amx_bf16` of our quantized kernels. dequant16(c0, tile) fills the
// weight tiles of columns [c0, c0 + 16) (zero past n), tile(b) being that of block b of 32 k
// (quads_to_bf16_tile). The thread's columns go in groups of up to 512, each dequantized once over the
// whole of K into weight tiles ([block of kc][16-column panel][tile step][16 pairs][16 columns]); then
// per block of k, each tile of 32 rows (64 KiB of pairs) passes every column of the group (the block's
// 1 MiB, in L2).
template <class Dequant16>
AUTOGLM_TARGET_AMX_BF16_DEQUANT void dequant_tile_panels(int64_t n, int64_t k, const uint8_t * q, int64_t m, float * c,
                                                         int64_t c_row_stride, int64_t p0, int64_t p1, Dequant16 dequant16) {
    // columns per group: 512 where their tiles take at most 16 MiB (K up to 16384): measured on machine
    // M6 (Q4_0 512 x 4096 x 4096, one thread, alternating, 512 k per block) 1.37x the int8 tiles against
    // 1.28x for 256 and 1.33x for 1024 (each group reads all the activations once; its block of k must
    // stay in L2)
    const int64_t NC = std::clamp<int64_t>((int64_t(8) << 20) / k / 32 * 32, 32, 512);
    const int64_t c_end = std::min(n, p1 * 8);
    const bf16_tile_rows a(k, m);
    const uint32_t * ap = (const uint32_t *) q;
    thread_local std::vector<uint32_t> buf;  // the group's weight tiles, 64-byte aligned, kept per thread
    if (buf.size() < (size_t) (NC * k / 2) + 16) buf.resize((size_t) (NC * k / 2) + 16);
    uint32_t * bp = (uint32_t *) (((uintptr_t) buf.data() + 63) & ~(uintptr_t) 63);
    amx_load_tiles(bf16_tile_config());
    for (int64_t g0 = p0 * 8; g0 < c_end; g0 += NC) {
        const int64_t ncols = (std::min(NC, c_end - g0) + 31) / 32 * 32;
        // block kb's tiles start at (kb * kc / 2) * ncols words; within it, panel j's at j * pairs * 16
        for (int64_t j = 0; j < ncols / 16; ++j) {
            dequant16(g0 + 16 * j, [&](int64_t b) {
                const int64_t kb = b * 32 / bf16_tile_rows::kc, step = b - kb * (bf16_tile_rows::kc / 32);
                return bp + (size_t) (kb * bf16_tile_rows::kc / 2 * ncols + j * a.pairs(kb) * 16 + step * 256);
            });
        }
        for (int64_t kb = 0; kb < a.blocks(); ++kb) {
            const int pairs = a.pairs(kb), steps = pairs / amx_step_pairs;
            const uint32_t * bk = bp + (size_t) (kb * bf16_tile_rows::kc / 2 * ncols);
            for (int64_t mt = 0; mt < a.m_tiles; ++mt) {
                const bf16_a_tiles at = bf16_a_tiles::packed(ap + a.tile_at(kb, mt));
                const int rows = (int) std::min<int64_t>(32, m - 32 * mt);
                for (int64_t cg = 0; cg < ncols; cg += 32) {
                    const uint32_t * b0 = bk + (size_t) (cg / 16) * pairs * 16;
                    const uint32_t * b1 = b0 + (size_t) pairs * 16;
                    const int cols = (int) std::min<int64_t>(32, c_end - (g0 + cg));
                    float * ct = c + 32 * mt * c_row_stride + g0 + cg;
                    if (rows == 32 && cols == 32) {
                        bf16_tile32(at, b0, b1, steps, ct, c_row_stride, kb > 0);
                    } else {  // at the bottom or right edge
                        bf16_tile32_edge(at, b0, b1, steps, ct, c_row_stride, kb > 0, rows, cols);
                    }
                }
            }
        }
    }
    amx_release_tiles();
}

// dequant_tile_panels for types whose 16-column groups are two 8-column panels joined (the K-quants, as
// gemm_panel.h's joined_panel_loop): the scratch for nb blocks of each, unpack(c0, narrow) filling
// columns [c0, c0 + 8), join(lo, hi, wide), to_tiles(wide, tile) writing the group's weight tiles.
template <class Narrow, class Wide, class Unpack, class Join, class ToTiles>
AUTOGLM_TARGET_AMX_BF16_DEQUANT void joined_dequant_tile_panels(int64_t nb, int64_t n, int64_t k, const uint8_t * q, int64_t m,
                                                                float * c, int64_t c_row_stride, int64_t p0, int64_t p1,
                                                                Unpack unpack, Join join, ToTiles to_tiles) {
    aligned_bytes lo_bytes((size_t) nb * sizeof(Narrow)), hi_bytes((size_t) nb * sizeof(Narrow));
    aligned_bytes wide_bytes((size_t) nb * sizeof(Wide));
    Narrow *lo = lo_bytes.as<Narrow>(), *hi = hi_bytes.as<Narrow>();
    Wide * wide = wide_bytes.as<Wide>();
    dequant_tile_panels(n, k, q, m, c, c_row_stride, p0, p1, [&](int64_t c0, auto tile) {
        unpack(c0, lo);
        unpack(c0 + 8, hi);
        join(lo, hi, wide);
        to_tiles(wide, tile);
    });
}

}  // namespace autoglm::gemm
