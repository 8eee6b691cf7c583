// The activations of the BF16 tile path for quantized weights (gemm_dequant_tiles.h): the rows of x
// rounded to BF16 pairs once per product, laid out as the tiles read them. Per block of kc k, every
// tile of 32 rows is one contiguous run of 32 rows x pairs(kb) pairs (64 KiB for a whole block), in
// tile steps: [step][32 rows][16 pairs], so each activation tile is one contiguous KiB
// (bf16_a_tiles::packed). Measured on machine M6: a loop of the kernel's tile steps (8 x 32 rows x 512
// columns x 1024 k, best of 9, three runs) took 22 ns per tdpbf16ps against 28 with the rows 2 KiB
// apart (a tile's 16 rows then share two sets of L1, and its prefetcher sees strided rows); the whole
// GEMM, one thread, 8 alternating pairs: Q4_0 512 x 4096 x 4096 1.02-1.15x (median 1.05), Q4_K 512 x
// 4096 x 13696 1.04-1.11x (median 1.06); two threads 1.04-1.06x.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace autoglm {

struct bf16_tile_rows {
    // k per block: 512 pairs, 32 tile steps per pass of the tiles over a 32 x 32 block of the output.
    // Measured on machine M6 (Q4_0, one thread, alternating, against the int8 tiles): 512 x 4096 x
    // 4096 1.84x against 1.50x for 2048 (and 1.37x for 512 against 1.21x for 256 in another run);
    // 512 x 13696 x 4096 1.55x against 1.42x for 512 and 1.22x for 2048. Fewer passes over the
    // output outweigh the activations' 64 KiB block spilling from L1 to L2.
    static constexpr int64_t kc = 1024;
    int64_t k;                          // a multiple of 32
    int64_t m_tiles;                    // tiles of 32 rows; rows past m are zero
    bf16_tile_rows(int64_t k_, int64_t m) : k(k_), m_tiles((m + 31) / 32) {}
    int64_t blocks() const { return (k + kc - 1) / kc; }
    int pairs(int64_t kb) const { return (int) (std::min(kc, k - kb * kc) / 2); }
    size_t words() const { return (size_t) (m_tiles * 32) * (size_t) (k / 2); }
    size_t bytes() const { return words() * sizeof(uint32_t); }
    // the 32 rows of tile mt over block kb: pair p of row r at + (p / 16) * 512 + r * 16 + p % 16
    size_t tile_at(int64_t kb, int64_t mt) const { return (size_t) (m_tiles * 32 * (kb * kc / 2) + mt * 32 * pairs(kb)); }
};

// Rows [r0, r1) of a (F32, rows a_row_bytes apart, k columns) into `out` (bf16_tile_rows(k, m).words()
// words, 64-byte aligned), rounded to nearest even as vcvtne2ps2bf16; the call whose r1 is m also
// zeroes the rows past m. Needs AVX512_BF16 (gemm_isa::amx implies it).
void pack_bf16_tile_rows(const float * a, size_t a_row_bytes, int64_t k, int64_t m, int64_t r0, int64_t r1, uint32_t * out);

}  // namespace autoglm
