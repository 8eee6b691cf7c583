// The float GEMM's AMX-BF16 variant (gemm_float.h): BF16 weights against F32 activations rounded to
// BF16 (nearest even, as the avx512_bf16 variant and a bf16 ViT do), tdpbf16ps summing the products
// into F32 tiles over the whole of K. It is what the vision tower's matrices run on where the CPU and
// the OS allow the tiles (gemm_isa::amx); within the same bounds as the vdpbf16ps variant (F32
// rounding of the product of the rounded operands), not the same bits: the tile unit sums in its own
// order.
#pragma once

#include <cstddef>
#include <cstdint>

namespace autoglm {

// Columns [j0, j1) of c[m][n] (rows ldc floats apart) = a[m][k] (rows lda floats apart) x w^T, w n rows
// of k BF16 values w_row_bytes apart; j0 a multiple of 32. Call only where amx_bf16_usable().
void bf16_amx_gemm_columns(const uint8_t * w, size_t w_row_bytes, int64_t n, int64_t k, const float * a, int64_t lda, int64_t m,
                           float * c, int64_t ldc, int64_t j0, int64_t j1);

}  // namespace autoglm
