#include "gemm_bf16_rows.h"

#include <cstring>

#include "bf16_pairs.h"

namespace autoglm {

#if defined(__x86_64__) && defined(__GNUC__)
AUTOGLM_TARGET_BF16_PAIRS void pack_bf16_tile_rows(const float * a, size_t a_row_bytes, int64_t k, int64_t m, int64_t r0,
                                                   int64_t r1, uint32_t * out) {
    const bf16_tile_rows l(k, m);
    const int64_t end = r1 >= m ? l.m_tiles * 32 : r1;
    for (int64_t r = r0; r < end; ++r) {
        const float * row = (const float *) ((const uint8_t *) a + (size_t) r * a_row_bytes);
        for (int64_t kb = 0; kb < l.blocks(); ++kb) {
            uint32_t * dst = out + l.tile_at(kb, r / 32) + (size_t) (r % 32) * 16;
            for (int step = 0; step < l.pairs(kb) / 16; ++step, dst += 32 * 16) {  // 32 k (16 pairs) a step
                if (r < m) {
                    to_bf16_pairs(row + kb * bf16_tile_rows::kc + 32 * step, 32, 1.0f, dst);
                } else {
                    std::memset(dst, 0, 16 * sizeof(uint32_t));
                }
            }
        }
    }
}
#else
void pack_bf16_tile_rows(const float *, size_t, int64_t, int64_t, int64_t, int64_t, uint32_t *) {}
#endif

}  // namespace autoglm
