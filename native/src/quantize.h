// Multithreaded conversion of F32 rows to any GGUF storage type ggml can write (F32, F16, BF16, the
// legacy quants, the K-quants, the IQ types). Each row is produced by ggml's own row quantizer
// (ggml_quantize_chunk, with the importance matrix when one is given), so the bytes are exactly what
// ggml/llama.cpp would write for the same input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "ggml.h"

namespace autoglm {

// Parses a ggml type name ("q4_0", "q4_k", "iq2_xxs", "f16", ...; case-insensitive) that ggml can
// quantize to; throws invalid_argument listing the accepted names otherwise.
ggml_type parse_storage_type(const std::string & name);

// Lower-case name of a storage type ("q4_k").
std::string storage_type_name(ggml_type type);

// Bytes of one row of n_per_row elements of `type`; throws when n_per_row is not a multiple of
// the type's block size.
size_t storage_row_size(ggml_type type, int64_t n_per_row);

// Converts nrows x n_per_row floats at `src` into `dst` (nrows * storage_row_size bytes).
// Rejects NaN/Inf input with an error naming the first bad element (row, column): quantized
// blocks of non-finite values are meaningless and would silently corrupt a model.
// `imatrix` (n_per_row values: the mean squared activation of each input column) weights the
// rounding error; types that need one (IQ2_XXS, IQ2_XS, IQ1_*) are refused without it. With
// `validate`, the written rows are checked with ggml_validate_row_data, as llama-quantize does
// (off for the converter, whose reference is gguf-py's quantizer, which keeps infinite scales).
// n_threads <= 0 means "all hardware threads". Thread-safe; holds no global state.
void quantize_rows(ggml_type type, const float * src, void * dst, int64_t nrows, int64_t n_per_row, int n_threads,
                   const float * imatrix = nullptr, bool validate = false);

}  // namespace autoglm
