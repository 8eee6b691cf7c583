// ref: ggml-cpu quants.c ggml_vec_dot_q8_0_q8_0 (the arithmetic) and ggml-common.h block_q8_0 (d, 32 int8).
#include "gemm_q8_0.h"

#include <cstring>

#include "ggml.h"

#if AUTOGLM_GEMM_X86
#    include "gemm_block32_entry.h"
#endif

namespace autoglm {

namespace {
constexpr int block = 32;
constexpr size_t block_bytes = 34;  // F16 d, 32 int8
}  // namespace

#if AUTOGLM_GEMM_X86
#    pragma GCC push_options
#    pragma GCC target("avx2,fma,f16c")
namespace {

using gemm::q8_0_rows;

void quantize(const float * a, size_t a_row_stride, int64_t k, int64_t r0, int64_t r1, uint8_t * q_bytes) {
    gemm::quantize_q8_0_rows(a, a_row_stride, r0, r1, q8_0_rows{q_bytes, k, k / block}, 128);
}

// Columns [c0, c0 + 8) of w (fewer at the right edge: zero weights and scales) as u = w + 128 in two
// planes, u = 16 * hi + lo: vectors 0..7 of a block hold hi, 8..15 lo.
void unpack_panel(const uint8_t * w, bool, int64_t n, int64_t nb, int64_t c0, const gemm::block32_panel<2> & panel) {
    const __m256i low = _mm256_set1_epi8(0x0F), flip = _mm256_set1_epi8((char) 0x80);
    for (int64_t b = 0; b < nb; ++b) {
        __m256i hi[8], lo[8];
        for (int c = 0; c < 8; ++c) {
            panel.dw[b * 8 + c] = 0.0f;
            hi[c] = lo[c] = _mm256_setzero_si256();
            if (c0 + c >= n) continue;
            const uint8_t * blk = w + ((c0 + c) * nb + b) * block_bytes;
            uint16_t h;
            std::memcpy(&h, blk, 2);
            panel.dw[b * 8 + c] = ggml_fp16_to_fp32(h);
            const __m256i u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *) (blk + 2)), flip);  // w + 128
            hi[c] = _mm256_and_si256(_mm256_srli_epi16(u, 4), low);
            lo[c] = _mm256_and_si256(u, low);
        }
        gemm::transpose_columns(hi, panel.v + b * 16);
        gemm::transpose_columns(lo, panel.v + b * 16 + 8);
    }
}

// each plane in 0..15: the 8 quads of a block fit in 16 bits (8 x 2 x 15 x 127 < 2^15); the VNNI
// variant joins the planes back into u = w + 128 (vpdpbusd has no 16-bit bound)
using entry = gemm::block32_entry<2, 8, unpack_panel, 128>;

}  // namespace
#    pragma GCC pop_options
#endif  // AUTOGLM_GEMM_X86

// min_k 0: on a Zen 1 the unrolled kernel runs 1.4-1.6x ggml's at every K of the 9B; the first
// version, whose int16 sums spilled to the stack, trailed it below K = 8,192 on a Zen 3.
const gemm::kernel & gemm_q8_0_kernel() {
    static const gemm::kernel k{GGML_TYPE_Q8_0,
                                block,
                                block + 8,  // gemm_q8_act.h: int8 q, F32 scale, int32 sum per block
                                false,
                                0,  // no break-even: 1.4-1.6x ggml's at K = 4,096 and 13,696 (bench/README.md)
                                "gemm_q8_0",
                                "gemm_q8_0_quantize",
                                "GEMM q8_0 (ours)",
                                "GEMM q8_0 rows to int8 (ours)",
                                AUTOGLM_GEMM_FN(quantize),
                                AUTOGLM_GEMM_FN(entry::panels),
                                AUTOGLM_GEMM_FN(entry::panels_vnni),
                                AUTOGLM_GEMM_FN(entry::panels_amx),
                                AUTOGLM_GEMM_FN(entry::panels_avx_vnni),
                                AUTOGLM_GEMM_FN(entry::panels_amx_bf16)};
    return k;
}

}  // namespace autoglm
