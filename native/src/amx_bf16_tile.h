// The AMX-BF16 register tile our BF16 tile GEMMs share (gemm_float_amx.cpp for BF16 weights,
// gemm_dequant_tiles.h for quantized weights dequantized to BF16): four 16 x 16 F32 tiles, 32 rows x 32
// columns, summed by tdpbf16ps over tile steps of 16 pairs of k, nothing leaving the tiles until the
// caller's block of k is done.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#    include <immintrin.h>

#    include <cstddef>
#    include <cstdint>

#    include "cpu_amx.h"

#    define AUTOGLM_TARGET_AMX_BF16 __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")))

namespace autoglm {

constexpr int amx_step_pairs = 16;  // pairs of k per tile step: a tile row is 16 pairs = 64 bytes

// Tiles 0-3: the F32 sums of rows 16i .. 16i+15 x columns 16j .. 16j+15 in tile 2i + j; 4 and 5: the
// activations of rows 0-15 and 16-31 for one step; 6 and 7: the weights of columns 0-15 and 16-31.
inline amx_tile_config bf16_tile_config() {
    amx_tile_config cfg;
    for (int t = 0; t < 8; ++t) cfg.set(t, 16, 64);
    return cfg;
}

// The 32 x 32 outputs at c (rows ldc floats apart) plus ap's 32 rows (pairs, kp16 apart) times the two
// 16-column panels bp0 and bp1 ([step][16 pairs][16 columns]) over `steps` tile steps; `acc`: start
// from c (a later block of k), else from zero. Call with bf16_tile_config() loaded.
AUTOGLM_TARGET_AMX_BF16 inline void bf16_tile32(const uint32_t * ap, int kp16, const uint32_t * bp0, const uint32_t * bp1,
                                                int steps, float * c, int64_t ldc, bool acc) {
    const size_t c_stride = (size_t) ldc * sizeof(float), a_stride = (size_t) kp16 * sizeof(uint32_t);
    if (acc) {
        _tile_loadd(0, c, c_stride);
        _tile_loadd(1, c + 16, c_stride);
        _tile_loadd(2, c + 16 * ldc, c_stride);
        _tile_loadd(3, c + 16 * ldc + 16, c_stride);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int s = 0; s < steps; ++s) {
        _tile_loadd(4, ap + s * amx_step_pairs, a_stride);
        _tile_loadd(5, ap + 16 * (size_t) kp16 + s * amx_step_pairs, a_stride);
        _tile_loadd(6, bp0 + (size_t) s * amx_step_pairs * 16, 64);
        _tile_loadd(7, bp1 + (size_t) s * amx_step_pairs * 16, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, c, c_stride);
    _tile_stored(1, c + 16, c_stride);
    _tile_stored(2, c + 16 * ldc, c_stride);
    _tile_stored(3, c + 16 * ldc + 16, c_stride);
}

// bf16_tile32 for a block at the bottom or right edge of c: rows x cols (at most 32 x 32) of it exist,
// so the tiles work on a local copy.
AUTOGLM_TARGET_AMX_BF16 inline void bf16_tile32_edge(const uint32_t * ap, int kp16, const uint32_t * bp0, const uint32_t * bp1,
                                                     int steps, float * c, int64_t ldc, bool acc, int rows, int cols) {
    alignas(64) float edge[32 * 32];
    if (acc) {
        for (int i = 0; i < rows; ++i) __builtin_memcpy(edge + 32 * i, c + i * ldc, (size_t) cols * sizeof(float));
    }
    bf16_tile32(ap, kp16, bp0, bp1, steps, edge, 32, acc);
    for (int i = 0; i < rows; ++i) __builtin_memcpy(c + i * ldc, edge + 32 * i, (size_t) cols * sizeof(float));
}

}  // namespace autoglm

#endif
