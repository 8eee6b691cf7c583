// ref: ggml-cpu quants.c ggml_vec_dot_q5_1_q8_1 and ggml_vec_dot_q4_1_q8_1 (the arithmetic: the int8 dot
//      product scaled by both blocks' scales, plus the weights' offset m times the activations' sum);
//      ggml-common.h block_q5_1 (d, m, qh: the 5th bits, qs: element j's low 4 bits in byte j % 16, low
//      nibble for j < 16) and block_q4_1 (d, m, qs).
#include "gemm_affine32.h"

#include <cstring>

#include "ggml.h"

#if AUTOGLM_GEMM_X86
#    include "gemm_block32_entry.h"
#endif

namespace autoglm {

namespace {
constexpr int block = 32;
}  // namespace

#if AUTOGLM_GEMM_X86
#    pragma GCC push_options
#    pragma GCC target("avx2,fma,f16c")
namespace {

using gemm::q8_0_rows;

// offset -1: corr holds each block's sum(q), the share of the weights' m (gemm_block32.h)
void quantize(const float * a, size_t a_row_stride, int64_t k, int64_t r0, int64_t r1, uint8_t * q_bytes) {
    gemm::quantize_q8_0_rows(a, a_row_stride, r0, r1, q8_0_rows{q_bytes, k, k / block}, -1);
}

// u in 0..31: 4 quads fit in 16 bits (4 x 2 x 31 x 127 < 2^15); in 0..15 all 8
using q5_1_entry = gemm::block32_entry<1, 4, gemm::unpack_nibble_panel<GGML_TYPE_Q5_1>, 0, true>;
using q4_1_entry = gemm::block32_entry<1, 8, gemm::unpack_nibble_panel<GGML_TYPE_Q4_1>, 0, true>;

}  // namespace
#    pragma GCC pop_options
#endif  // AUTOGLM_GEMM_X86

const gemm::kernel & gemm_q5_1_kernel() {
    static const gemm::kernel k{GGML_TYPE_Q5_1,
                                block,
                                block + 8,  // gemm_q8_act.h: int8 q, F32 scale, int32 sum per block
                                false,
                                0,
                                "gemm_q5_1",
                                "gemm_q5_1_quantize",
                                "GEMM q5_1 (ours)",
                                "GEMM q5_1 rows to int8 (ours)",
                                AUTOGLM_GEMM_FN(quantize),
                                AUTOGLM_GEMM_FN(q5_1_entry::panels),
                                AUTOGLM_GEMM_FN(q5_1_entry::panels_vnni),
                                AUTOGLM_GEMM_FN(q5_1_entry::panels_amx),
                                AUTOGLM_GEMM_FN(q5_1_entry::panels_avx_vnni),
                                AUTOGLM_GEMM_FN(q5_1_entry::panels_amx_bf16)};
    return k;
}

const gemm::kernel & gemm_q4_1_kernel() {
    static const gemm::kernel k{GGML_TYPE_Q4_1,
                                block,
                                block + 8,
                                false,
                                0,
                                "gemm_q4_1",
                                "gemm_q4_1_quantize",
                                "GEMM q4_1 (ours)",
                                "GEMM q4_1 rows to int8 (ours)",
                                AUTOGLM_GEMM_FN(quantize),
                                AUTOGLM_GEMM_FN(q4_1_entry::panels),
                                AUTOGLM_GEMM_FN(q4_1_entry::panels_vnni),
                                AUTOGLM_GEMM_FN(q4_1_entry::panels_amx),
                                AUTOGLM_GEMM_FN(q4_1_entry::panels_avx_vnni),
                                AUTOGLM_GEMM_FN(q4_1_entry::panels_amx_bf16)};
    return k;
}

}  // namespace autoglm
