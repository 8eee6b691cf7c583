// ref: ggml-cpu quants.c ggml_vec_dot_q5_0_q8_0 (the arithmetic) and ggml-common.h block_q5_0 (d, qh:
//      the 5th bits, qs: element j's low 4 bits in byte j % 16, low nibble for j < 16).
#include "gemm_q5_0.h"

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

void quantize(const float * a, size_t a_row_stride, int64_t k, int64_t r0, int64_t r1, uint8_t * q_bytes) {
    gemm::quantize_q8_0_rows(a, a_row_stride, r0, r1, q8_0_rows{q_bytes, k, k / block}, 16);
}

// u in 0..31: 4 quads fit in 16 bits (4 x 2 x 31 x 127 < 2^15)
using entry = gemm::block32_entry<1, 4, gemm::unpack_nibble_panel<GGML_TYPE_Q5_0>, 16>;  // u = w + 16

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
                                AUTOGLM_GEMM_FN(entry::panels_vnni),
                                AUTOGLM_GEMM_FN(entry::panels_amx),
                                AUTOGLM_GEMM_FN(entry::panels_avx_vnni),
                                AUTOGLM_GEMM_FN(entry::panels_amx_bf16)};
    return k;
}

}  // namespace autoglm
