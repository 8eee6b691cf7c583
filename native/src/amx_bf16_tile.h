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

// Where the 32 rows of activation pairs of a bf16_tile32 call are: tile step s's rows 0-15 at
// p + s * step words, rows 16-31 at p + s * step + half, each tile's 16 rows `stride` bytes apart.
struct bf16_a_tiles {
    const uint32_t * p;
    size_t step, half, stride;
    // rows of kp16 pairs one after another (gemm_float_amx.cpp)
    static bf16_a_tiles rows(const uint32_t * p, int kp16) {
        return {p, amx_step_pairs, (size_t) 16 * kp16, (size_t) kp16 * sizeof(uint32_t)};
    }
    // [step][32 rows][16 pairs]: every tile one contiguous KiB (gemm_bf16_rows.h)
    static bf16_a_tiles packed(const uint32_t * p) { return {p, 32 * amx_step_pairs, 16 * amx_step_pairs, 64}; }
};

// The 32 x 32 outputs at c (rows ldc floats apart) plus a's 32 rows times the two 16-column panels bp0
// and bp1 ([step][16 pairs][16 columns]) over `steps` tile steps; `acc`: start from c (a later block of
// k), else from zero. Call with bf16_tile_config() loaded.
AUTOGLM_TARGET_AMX_BF16 inline void bf16_tile32(const bf16_a_tiles & a, const uint32_t * bp0, const uint32_t * bp1, int steps,
                                                float * c, int64_t ldc, bool acc) {
    const size_t c_stride = (size_t) ldc * sizeof(float);
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
        _tile_loadd(4, a.p + s * a.step, a.stride);
        _tile_loadd(5, a.p + s * a.step + a.half, a.stride);
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
AUTOGLM_TARGET_AMX_BF16 inline void bf16_tile32_edge(const bf16_a_tiles & a, const uint32_t * bp0, const uint32_t * bp1,
                                                     int steps, float * c, int64_t ldc, bool acc, int rows, int cols) {
    alignas(64) float edge[32 * 32];
    if (acc) {
        for (int i = 0; i < rows; ++i) __builtin_memcpy(edge + 32 * i, c + i * ldc, (size_t) cols * sizeof(float));
    }
    bf16_tile32(a, bp0, bp1, steps, edge, 32, acc);
    for (int i = 0; i < rows; ++i) __builtin_memcpy(c + i * ldc, edge + 32 * i, (size_t) cols * sizeof(float));
}

}  // namespace autoglm

#endif
