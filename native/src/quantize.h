// Multithreaded conversion of F32 rows to a GGUF storage type (Q4_0, Q8_0, Q6_K, F16, BF16).
// Each output block is produced by ggml's own reference row quantizer (ggml_quantize_chunk without
// an importance matrix), so the bytes are exactly what ggml/llama.cpp would write.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "ggml.h"

namespace autoglm {

// Parses "q4_0", "q8_0", "q6_k", "f16", "bf16", "f32" (case-insensitive); throws invalid_argument otherwise.
ggml_type parse_storage_type(const std::string & name);

// Bytes of one row of n_per_row elements of `type`; throws when n_per_row is not a multiple of
// the type's block size.
size_t storage_row_size(ggml_type type, int64_t n_per_row);

// Converts nrows x n_per_row floats at `src` into `dst` (nrows * storage_row_size bytes).
// Rejects NaN/Inf input with an error naming the first bad element (row, column): quantized
// blocks of non-finite values are meaningless and would silently corrupt a model.
// n_threads <= 0 means "all hardware threads". Thread-safe; holds no global state.
void quantize_rows(ggml_type type, const float * src, void * dst, int64_t nrows, int64_t n_per_row,
                   int n_threads);

}  // namespace autoglm
