// ref: ggml-cpu's MUL_MAT for BF16 weights (ggml_compute_forward_mul_mat), which this replaces on CPUs
// with AMX; the blocking is gemm_float_kernel.inc's (packed weights per block of k, packed rows of
// activations), the register tile four 16 x 16 F32 tiles (32 rows x 32 columns).
#include "gemm_float_amx.h"

#if defined(__x86_64__) && defined(__GNUC__)
#    include <immintrin.h>

#    include <algorithm>
#    include <cstring>
#    include <vector>

#    include "bf16_pairs.h"
#    include "cpu_amx.h"

#    define AUTOGLM_TARGET_AMX_BF16 __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")))

namespace autoglm {

namespace {

constexpr int KC = 512;        // k per packed block: 256 pairs, 16 tile steps
// rows per packed block of activations: one tile of 32, whose 32 KiB of pairs stay in L1 while every
// column group of the packed weights passes (from L2). Measured on machine M6 (one thread, alternating,
// the tower's shapes at 1 MP): 9-23% faster than 96 rows, whose 96 KiB made both operands come from L2.
constexpr int MC = 32;
constexpr int64_t NC = 1024;   // columns per packed block of weights: 1 MiB of pairs
constexpr int step_pairs = 16;  // pairs of k per tile step: a tile row is 16 pairs = 64 bytes

// Tiles 0-3: the F32 sums of rows 16i .. 16i+15 x columns 16j .. 16j+15 in tile 2i + j; 4 and 5: the
// activations of rows 0-15 and 16-31 for one step; 6 and 7: the weights of columns 0-15 and 16-31.
amx_tile_config bf16_tiles() {
    amx_tile_config cfg;
    for (int t = 0; t < 8; ++t) cfg.set(t, 16, 64);
    return cfg;
}

// Rows [m0, m0 + n_rows) of a over k [k0, k0 + kc) rounded to BF16 pairs, row r at ap + r * kp16
// (zero past kc, and whole rows of zeros past m).
AUTOGLM_TARGET_AMX_BF16 void pack_rows(const float * a, int64_t lda, int64_t m, int64_t m0, int n_rows, int64_t k0, int kc,
                                       int kp16, uint32_t * ap) {
    const int kp = (kc + 1) / 2;
    for (int r = 0; r < n_rows; ++r) {
        uint32_t * dst = ap + (size_t) r * kp16;
        int p = 0;
        if (m0 + r < m) {
            to_bf16_pairs(a + (m0 + r) * lda + k0, kc, 1.0f, dst);
            p = kp;
        }
        for (; p < kp16; ++p) dst[p] = 0;
    }
}

// The 32 x 32 outputs at c (rows ldc floats apart) plus ap's 32 rows times bp's two panels over steps
// tile steps; `acc`: start from c (a later block of k), else from zero.
AUTOGLM_TARGET_AMX_BF16 inline void tile32(const uint32_t * ap, int kp16, const uint32_t * bp0, const uint32_t * bp1, int steps,
                                           float * c, int64_t ldc, bool acc) {
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
        _tile_loadd(4, ap + s * step_pairs, a_stride);
        _tile_loadd(5, ap + 16 * (size_t) kp16 + s * step_pairs, a_stride);
        _tile_loadd(6, bp0 + (size_t) s * step_pairs * 16, 64);
        _tile_loadd(7, bp1 + (size_t) s * step_pairs * 16, 64);
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

}  // namespace

AUTOGLM_TARGET_AMX_BF16 void bf16_amx_gemm_columns(const uint8_t * w, size_t w_row_bytes, int64_t n, int64_t k, const float * a,
                                                   int64_t lda, int64_t m, float * c, int64_t ldc, int64_t j0, int64_t j1) {
    if (j0 >= j1) return;
    // packed blocks, 64-byte aligned (a tile row never splits a cache line), kept per thread
    thread_local std::vector<uint32_t> buf;
    const size_t b_words = (size_t) NC * (KC / 2), a_words = (size_t) MC * (KC / 2);
    if (buf.size() < b_words + a_words + 16) buf.resize(b_words + a_words + 16);
    uint32_t * bp = (uint32_t *) (((uintptr_t) buf.data() + 63) & ~(uintptr_t) 63);
    uint32_t * ap = bp + b_words;
    alignas(64) float edge[32 * 32];
    amx_load_tiles(bf16_tiles());
    for (int64_t k0 = 0; k0 < k; k0 += KC) {
        const int kc = (int) std::min<int64_t>(KC, k - k0);
        const int steps = ((kc + 1) / 2 + step_pairs - 1) / step_pairs, kp16 = steps * step_pairs;
        for (int64_t g0 = j0; g0 < j1; g0 += NC) {
            const int64_t ncols = (std::min(NC, j1 - g0) + 31) / 32 * 32;
            // panels of 16 columns, kp16 pairs each: every 16 pairs of a panel is a weight tile
            pack_bf16_weight_pairs(w, w_row_bytes, n, g0, ncols, 16, k0, kc, kp16, bp);
            for (int64_t m0 = 0; m0 < m; m0 += MC) {
                const int rows = (int) std::min<int64_t>(MC, m - m0), tiles = (rows + 31) / 32;
                pack_rows(a, lda, m, m0, tiles * 32, k0, kc, kp16, ap);
                for (int64_t cg = 0; cg < ncols; cg += 32) {
                    const uint32_t * bp0 = bp + (size_t) (cg / 16) * kp16 * 16;
                    const uint32_t * bp1 = bp0 + (size_t) kp16 * 16;
                    const int cols = (int) std::min<int64_t>(32, j1 - (g0 + cg));
                    for (int t = 0; t < tiles; ++t) {
                        const int r = std::min(32, rows - 32 * t);
                        float * ct = c + (m0 + 32 * t) * ldc + g0 + cg;
                        const uint32_t * at = ap + (size_t) 32 * t * kp16;
                        if (r == 32 && cols == 32) {
                            tile32(at, kp16, bp0, bp1, steps, ct, ldc, k0 > 0);
                            continue;
                        }
                        // at the bottom or right edge: through a local copy of the outputs that exist
                        if (k0 > 0) {
                            for (int i = 0; i < r; ++i) std::memcpy(edge + 32 * i, ct + i * ldc, cols * sizeof(float));
                        }
                        tile32(at, kp16, bp0, bp1, steps, edge, 32, k0 > 0);
                        for (int i = 0; i < r; ++i) std::memcpy(ct + i * ldc, edge + 32 * i, cols * sizeof(float));
                    }
                }
            }
        }
    }
    amx_release_tiles();
}

}  // namespace autoglm

#else

namespace autoglm {
void bf16_amx_gemm_columns(const uint8_t *, size_t, int64_t, int64_t, const float *, int64_t, int64_t, float *, int64_t, int64_t,
                           int64_t) {}
}  // namespace autoglm

#endif
