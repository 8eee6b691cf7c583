// What the prompt GEMMs of the K-quants with 6-bit scales and mins (Q4_K: gemm_q4_k.cpp, Q5_K:
// gemm_q5_k.cpp) share: the unpacked super-block of a panel of 8 columns that their AVX2 kernels read,
// its 16-column AVX-512 form, and ggml's packing of the scales and mins.
// ref: ggml-quants.c get_scale_min_k4.
// Include only where AUTOGLM_GEMM_X86 (gemm_panel.h) is set: the functions carry their own target.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "gemm_dequant_tiles.h"
#include "gemm_panel.h"

namespace autoglm::gemm::kq {

constexpr int sub_blocks = 8;  // sub-blocks of 32 per super-block of 256

// One super-block of a panel of 8 columns, the weights unsigned (Q4_K 0..15, Q5_K 0..31).
struct panel_block {
    __m256i q[sub_blocks * 8];     // sub-block j: vectors 8j .. 8j+7, vector t = k 4t .. 4t+3 of each column
    __m256i sc[sub_blocks];        // sub-block j: int16 lanes 2c, 2c+1 = column c's scale
    __m256i mins[sub_blocks / 2];  // sub-blocks 2p, 2p+1: int16 lane 2c = column c's min of 2p, 2c+1 of 2p+1
    float d[8], dmin[8];
};
static_assert(sizeof(panel_block) % 32 == 0, "panel blocks must keep 32-byte alignment");

// ggml's get_scale_min_k4: the (scale, min) pair j of 8, 6 bits each, packed in 12 bytes.
inline void scale_min(int j, const uint8_t * s, int16_t & sc, int16_t & m) {
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = (int16_t) ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4));
        m = (int16_t) ((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

// Fill a panel block's scales and mins: sc[j] and mins[j / 2] from sc_of[c][j], m_of[c][j] (zero for
// missing columns), d and dmin as given.
inline void set_scales(panel_block & P, const int16_t sc_of[8][sub_blocks], const int16_t m_of[8][sub_blocks]) {
    alignas(32) int16_t sc[sub_blocks][16], mins[sub_blocks / 2][16];
    for (int c = 0; c < 8; ++c) {
        for (int j = 0; j < sub_blocks; ++j) {
            sc[j][2 * c] = sc[j][2 * c + 1] = sc_of[c][j];
            mins[j / 2][2 * c + (j % 2)] = m_of[c][j];
        }
    }
    for (int j = 0; j < sub_blocks; ++j) std::memcpy(&P.sc[j], sc[j], 32);
    for (int p = 0; p < sub_blocks / 2; ++p) std::memcpy(&P.mins[p], mins[p], 32);
}

// The AVX-512 form: 16 columns, two panel blocks joined. The scales are F32 here: the VNNI kernels
// apply them to int32 sums, exactly (each kernel says why its products stay below 2^24).
struct wide_block {
    __m512i q[sub_blocks * 8];     // as panel_block::q, columns 0-7 in the low 256 bits
    __m512 sc[sub_blocks];         // lane c: column c's scale, in F32
    __m512i mins[sub_blocks / 2];  // as panel_block::mins, 16 columns
    float d[16], dmin[16];
};
static_assert(sizeof(wide_block) % 64 == 0, "wide blocks must keep 64-byte alignment");

AUTOGLM_TARGET_AVX512_VNNI inline void join_panels(const panel_block * lo_cols, const panel_block * hi_cols, int64_t nb,
                                                   wide_block * wide) {
    const __m512i low16 = _mm512_set1_epi32(0xFFFF);  // sc holds each scale twice, as two int16
    for (int64_t b = 0; b < nb; ++b) {
        const panel_block &L = lo_cols[b], &H = hi_cols[b];
        wide_block & W = wide[b];
        for (int i = 0; i < sub_blocks * 8; ++i) W.q[i] = _mm512_inserti64x4(_mm512_castsi256_si512(L.q[i]), H.q[i], 1);
        for (int j = 0; j < sub_blocks; ++j) {
            const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(L.sc[j]), H.sc[j], 1);
            W.sc[j] = _mm512_cvtepi32_ps(_mm512_and_si512(both, low16));
        }
        for (int p = 0; p < sub_blocks / 2; ++p) W.mins[p] = _mm512_inserti64x4(_mm512_castsi256_si512(L.mins[p]), H.mins[p], 1);
        std::memcpy(W.d, L.d, sizeof L.d);
        std::memcpy(W.d + 8, H.d, sizeof H.d);
        std::memcpy(W.dmin, L.dmin, sizeof L.dmin);
        std::memcpy(W.dmin + 8, H.dmin, sizeof H.dmin);
    }
}

// The BF16 tile form (gemm_dequant_tiles.h) of a type with this panel: unpack(c0, panel) fills columns
// [c0, c0 + 8) for every super-block. Sub-block j of super-block b is block 8b + j of the tiles, its
// weights w = (d x sc_j) x u - dmin x m_j as ggml's dequantize_row_q4_K and _q5_K compute them (both
// products exact in F32, so one rounding of d1 u - m1 gives their value).
template <class Unpack>
AUTOGLM_TARGET_AMX_BF16_DEQUANT void panels_amx_bf16(int64_t n, int64_t k, const uint8_t * q, int64_t m, float * c,
                                                     int64_t c_row_stride, int64_t p0, int64_t p1, Unpack unpack) {
    const int64_t nb = k / (sub_blocks * 32);
    joined_dequant_tile_panels<panel_block, wide_block>(
        nb, n, k, q, m, c, c_row_stride, p0, p1, unpack,
        [&](const panel_block * lo, const panel_block * hi, wide_block * wide) { join_panels(lo, hi, nb, wide); },
        [&](const wide_block * wide, auto tile) AUTOGLM_TARGET_AMX_BF16_DEQUANT {
            for (int64_t b = 0; b < nb; ++b) {
                const wide_block & W = wide[b];
                const __m512 d = _mm512_loadu_ps(W.d), dmin = _mm512_loadu_ps(W.dmin);
                for (int j = 0; j < sub_blocks; ++j) {
                    // mins[j / 2]: column c's m_j in int16 lane 2c + j % 2
                    const __m512i pair = W.mins[j / 2];
                    const __m512i mj = j % 2 ? _mm512_srli_epi32(pair, 16) : _mm512_and_si512(pair, _mm512_set1_epi32(0xFFFF));
                    alignas(64) float dw[16], mw[16];
                    _mm512_store_ps(dw, _mm512_mul_ps(d, W.sc[j]));
                    _mm512_store_ps(mw, _mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(mj))));
                    quads_to_bf16_tile(W.q + 8 * j, dw, mw, dw, mw, tile(b * sub_blocks + j));
                }
            }
        });
}

}  // namespace autoglm::gemm::kq
