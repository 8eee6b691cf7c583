// ref: ggml-cpu's MUL_MAT for BF16 weights (ggml_compute_forward_mul_mat), which this replaces on CPUs
// with AMX; the blocking is gemm_float_kernel.inc's (packed weights per block of k, packed rows of
// activations), the register tile four 16 x 16 F32 tiles (32 rows x 32 columns).
#include "gemm_float_amx.h"

#if defined(__x86_64__) && defined(__GNUC__)
#    include <immintrin.h>

#    include <algorithm>
#    include <cstring>
#    include <vector>

#    include "amx_bf16_tile.h"
#    include "bf16_pairs.h"

namespace autoglm {

namespace {

constexpr int KC = 512;        // k per packed block: 256 pairs, 16 tile steps
// rows per packed block of activations: one tile of 32, whose 32 KiB of pairs stay in L1 while every
// column group of the packed weights passes (from L2). Measured on machine M6 (one thread, alternating,
// the tower's shapes at 1 MP): 9-23% faster than 96 rows, whose 96 KiB made both operands come from L2.
constexpr int MC = 32;
constexpr int64_t NC = 1024;   // columns per packed block of weights: 1 MiB of pairs

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
    amx_load_tiles(bf16_tile_config());
    for (int64_t k0 = 0; k0 < k; k0 += KC) {
        const int kc = (int) std::min<int64_t>(KC, k - k0);
        const int steps = ((kc + 1) / 2 + amx_step_pairs - 1) / amx_step_pairs, kp16 = steps * amx_step_pairs;
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
                            bf16_tile32(bf16_a_tiles::rows(at, kp16), bp0, bp1, steps, ct, ldc, k0 > 0);
                        } else {  // at the bottom or right edge
                            bf16_tile32_edge(bf16_a_tiles::rows(at, kp16), bp0, bp1, steps, ct, ldc, k0 > 0, r, cols);
                        }
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
