// ref: ggml-cpu quants.c ggml_vec_dot_q5_0_q8_0 (the arithmetic) and ggml-common.h block_q5_0 (d, qh:
//      the 5th bits, qs: element j's low 4 bits in byte j % 16, low nibble for j < 16).
#include "gemm_q5_0.h"

#include <cstring>

#include "ggml.h"

#if AUTOGLM_GEMM_X86
#    include "gemm_block32_vnni.h"
#endif

namespace autoglm {

namespace {
constexpr int block = 32;
constexpr size_t block_bytes = 22;  // F16 d, 4 bytes qh, 16 bytes qs
}  // namespace

#if AUTOGLM_GEMM_X86
#    pragma GCC push_options
#    pragma GCC target("avx2,fma,f16c")
namespace {

using gemm::q8_0_rows;

void quantize(const float * a, size_t a_row_stride, int64_t k, int64_t r0, int64_t r1, uint8_t * q_bytes) {
    gemm::quantize_q8_0_rows(a, a_row_stride, r0, r1, q8_0_rows{q_bytes, k, k / block}, 16);
}

// Columns [c0, c0 + 8) of w (fewer at the right edge: zero weights and scales) as u = w + 16.
void unpack_panel(const uint8_t * w, bool, int64_t n, int64_t nb, int64_t c0, const gemm::block32_panel<1> & panel) {
    const __m128i low = _mm_set1_epi8(0x0F);
    // byte j of a vector takes byte j / 8 of qh (shuffles stay in 128-bit lanes: qh is in both), then
    // tests its bit j % 8
    const __m256i spread =
        _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((int64_t) 0x8040201008040201ULL);
    const __m256i sixteen = _mm256_set1_epi8(0x10);
    for (int64_t b = 0; b < nb; ++b) {
        __m256i v[8];
        for (int c = 0; c < 8; ++c) {
            panel.dw[b * 8 + c] = 0.0f;
            v[c] = _mm256_setzero_si256();
            if (c0 + c >= n) continue;
            const uint8_t * blk = w + ((c0 + c) * nb + b) * block_bytes;
            uint16_t h;
            int32_t qh;
            std::memcpy(&h, blk, 2);
            std::memcpy(&qh, blk + 2, 4);
            panel.dw[b * 8 + c] = ggml_fp16_to_fp32(h);
            const __m128i qs = _mm_loadu_si128((const __m128i *) (blk + 6));
            // elements 0..15 are the low nibbles, 16..31 the high ones; the 5th bit from qh
            const __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), low), _mm_and_si128(qs, low));
            const __m256i set = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(qh), spread), bit);
            v[c] = _mm256_or_si256(nib, _mm256_and_si256(_mm256_cmpeq_epi8(set, bit), sixteen));
        }
        gemm::transpose_columns(v, panel.v + b * 8);
    }
}

// u in 0..31: 4 quads fit in 16 bits (4 x 2 x 31 x 127 < 2^15)
using entry = gemm::block32_entry<1, 4, unpack_panel>;

}  // namespace
#    pragma GCC pop_options
#endif  // AUTOGLM_GEMM_X86

const gemm::kernel & gemm_q5_0_kernel() {
    static const gemm::kernel k{GGML_TYPE_Q5_0,
                                block,
                                block + 8,  // gemm_q8_act.h: int8 q, F32 scale, int32 sum per block
                                false,
                                0,
                                "gemm_q5_0",
                                "gemm_q5_0_quantize",
                                "GEMM q5_0 (ours)",
                                "GEMM q5_0 rows to int8 (ours)",
                                AUTOGLM_GEMM_FN(quantize),
                                AUTOGLM_GEMM_FN(entry::panels),
                                AUTOGLM_GEMM_FN(entry::panels_vnni)};
    return k;
}

}  // namespace autoglm
