// ref: ggml-cpu quants.c ggml_vec_dot_q4_0_q8_0 (the arithmetic: int8 dots per 32-block, scaled by
//      both blocks' scales); activations as gemm_q8_act.h.
#include "gemm_q4_0.h"

#include <cstring>

#include "gemm_panel.h"
#include "ggml.h"

#if AUTOGLM_GEMM_X86
#    include "gemm_block32_entry.h"
#endif

namespace autoglm {

#if AUTOGLM_GEMM_X86
#    pragma GCC push_options
#    pragma GCC target("avx2,fma,f16c")
namespace {

using gemm::q8_0_rows;

void quantize(const float * a, size_t a_row_stride, int64_t k, int64_t r0, int64_t r1, uint8_t * q_bytes) {
    gemm::quantize_q8_0_rows(a, a_row_stride, r0, r1, q8_0_rows{q_bytes, k, k / q4_0_block}, 8);
}

// Columns [c0, c0 + 8) of w (fewer at the right edge: zero weights, zero scale) as unsigned nibble
// values, 8 vectors per block: vector j holds k = 4j .. 4j+3 of each column. `repacked`: w is in
// ggml's CPU_REPACK layout for Q4_0 on x86 (block_q4_0x8 per 8 columns and block: the 8 F16 scales,
// then the columns' nibble bytes in chunks of 8 (bytes 0-7 of columns 0..7, then bytes 8-15), each
// byte XOR 0x88); else the GGUF layout (N rows of 18-byte blocks).
void unpack_panel(const uint8_t * w, bool repacked, int64_t n, int64_t nb, int64_t c0, const gemm::block32_panel<1> & panel) {
    __m256i * v_out = panel.v;
    float * dw = panel.dw;
    const __m128i low = _mm_set1_epi8(0x0F);
    const __m128i flip = _mm_set1_epi8((char) 0x88);
    constexpr size_t x8_bytes = 8 * 2 + 8 * 16;  // one block_q4_0x8
    for (int64_t b = 0; b < nb; ++b) {
        __m256i v[8];
        for (int c = 0; c < 8; ++c) {
            if (c0 + c >= n) {
                v[c] = _mm256_setzero_si256();
                dw[b * 8 + c] = 0.0f;
                continue;
            }
            uint16_t h;
            __m128i qs;
            if (repacked) {
                const uint8_t * x8 = w + ((c0 / 8) * nb + b) * x8_bytes;
                std::memcpy(&h, x8 + 2 * c, 2);
                const __m128i lo8 = _mm_loadl_epi64((const __m128i *) (x8 + 16 + 8 * c));
                const __m128i hi8 = _mm_loadl_epi64((const __m128i *) (x8 + 16 + 64 + 8 * c));
                qs = _mm_xor_si128(_mm_unpacklo_epi64(lo8, hi8), flip);
            } else {
                const uint8_t * blk = w + ((c0 + c) * nb + b) * q4_0_block_bytes;
                std::memcpy(&h, blk, 2);
                qs = _mm_loadu_si128((const __m128i *) (blk + 2));
            }
            dw[b * 8 + c] = ggml_fp16_to_fp32(h);
            // elements 0..15 are the low nibbles, 16..31 the high ones
            v[c] = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), low), _mm_and_si128(qs, low));
        }
        gemm::transpose_columns(v, v_out + b * 8);
    }
}

// u = w + 8 in 0..15: the 8 quads of a block fit in 16 bits (8 x 2 x 15 x 127 < 2^15)
using entry = gemm::block32_entry<1, 8, unpack_panel, 8>;

}  // namespace
#    pragma GCC pop_options
#endif  // AUTOGLM_GEMM_X86

const gemm::kernel & gemm_q4_0_kernel() {
    static const gemm::kernel k{GGML_TYPE_Q4_0,
                                q4_0_block,
                                gemm::q8_0_rows::block_bytes,
                                true,
                                0,
                                "gemm_q4_0",
                                "gemm_q4_0_quantize",
                                "GEMM q4_0 (ours)",
                                "GEMM q4_0 rows to int8 (ours)",
                                AUTOGLM_GEMM_FN(quantize),
                                AUTOGLM_GEMM_FN(entry::panels),
                                AUTOGLM_GEMM_FN(entry::panels_vnni),
                                AUTOGLM_GEMM_FN(entry::panels_amx),
                                AUTOGLM_GEMM_FN(entry::panels_avx_vnni),
                                AUTOGLM_GEMM_FN(entry::panels_amx_bf16)};
    return k;
}

}  // namespace autoglm
