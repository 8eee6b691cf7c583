// Our interleaved layout for the block-32 nibble types (Q5_0, Q5_1, Q4_1) on the CPU (issue #15). In
// the GGUF layout each row's 32-weight block (20-24 bytes) needs its own exact sum and scale step, and
// a decode GEMV spent more on gathering eight rows' scales and reducing their lanes than on the
// products (gemv_block32.h: 20-24 GB/s where Q8_0 streams 40). Here rows come in groups of 16 and a
// group's block b is one record:
//   d[16]   F16 scales, row r at 2r
//   m[16]   F16 offsets (Q5_1, Q4_1)
//   masks   (Q5_0, Q5_1) per chunk c = 0..3 two 64-bit masks: bit 4r + i of the first is the 5th bit of
//           row r's element 4c + i, of the second that of element 16 + 4c + i
//   qs      per chunk c 64 bytes: row r's qs bytes 4c .. 4c + 3 at 4r (low nibbles: elements 4c + i,
//           high nibbles: 16 + 4c + i)
// so one 32-bit lane per row: a vpdpbusd of a chunk's nibbles against 4 activation bytes broadcast
// adds to 16 rows' block sums at once, which stay exact int32 with nothing to reduce. The record is
// as large as the 16 GGUF blocks (nothing is held twice). ggml has no kernel for it, so a weight in
// this layout is multiplied only by ours (gemv_block32_x16.h, and gemm.h for any other batch, whose
// panels are 8 rows of a record's chunks as they are: gemm_block32.h unpack_x16_panel), which
// the decoder graph guarantees (text_graph.cpp); it is marked in its op_params.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ggml.h"

namespace autoglm {

constexpr int x16_rows = 16;

// Where a record's parts start, and the GGUF block's (bytes; 0 where a type has no such part).
struct x16_layout {
    size_t block_bytes;  // GGUF block
    size_t src_m, src_qh, src_qs;
    size_t m_at, masks_at, qs_at, record_bytes;
};
// GGUF: Q5_0 d | qh | qs, Q5_1 d | m | qh | qs, Q4_1 d | m | qs; records: d | m | masks | qs
inline constexpr x16_layout x16_q5_0{22, 0, 2, 6, 0, 32, 96, 352};
inline constexpr x16_layout x16_q5_1{24, 2, 4, 8, 32, 64, 128, 384};
inline constexpr x16_layout x16_q4_1{20, 2, 0, 4, 32, 0, 64, 320};

// The layout of `type`, or nullptr for a type without one.
constexpr const x16_layout * x16_layout_of(ggml_type type) {
    return type == GGML_TYPE_Q5_0 ? &x16_q5_0 : type == GGML_TYPE_Q5_1 ? &x16_q5_1 : type == GGML_TYPE_Q4_1 ? &x16_q4_1 : nullptr;
}

// Whether a file's weight `w` (its type and shape) would be held in this layout on a CPU that runs our
// kernels: Q5_0/Q5_1/Q4_1, rows a multiple of 16, AVX2, AUTOGLM_GEMM not "ggml".
bool x16_applies(const ggml_tensor * w);

// n GGUF rows of k elements of `type` (n a multiple of 16) into the interleaved layout.
void x16_repack(ggml_type type, const uint8_t * src, int64_t n, int64_t k, uint8_t * dst);

// The mark a weight in this layout carries (op_params of a leaf tensor, which ggml never reads).
void x16_mark(ggml_tensor * w);
bool x16_marked(const ggml_tensor * w);

}  // namespace autoglm
