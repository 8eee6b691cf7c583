// GGUF -> GGUF re-quantization (`autoglm-gguf quantize`), written the way llama-quantize writes its
// output so that, for the same input, tensor types and importance matrix, the files are byte-identical:
// the input's metadata in its order, then general.quantization_version and general.file_type (moved
// to the end, as gguf_set_val_* does), then the caller's extra keys; tensors in the order given, each
// padded to the file's alignment. Which type each tensor gets is the caller's choice (the per-tensor
// mix lives in Python, python/autoglm_gguf/quant_mix.py).
// ref: llama.cpp src/llama-quant.cpp, llama_model_quantize_impl
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ggml.h"

namespace autoglm {

struct requant_tensor {
    std::string name;                  // must name a tensor of the input; every input tensor listed once
    ggml_type type;                    // its type in the output (the input's type = copied unchanged)
    std::vector<float> imatrix;        // empty, or ne[0] values: mean squared activation per column
};

struct requant_kv {                    // an extra metadata key set after the copied ones
    std::string key;
    bool is_string = false;
    std::string str;
    uint32_t u32 = 0;
};

struct requant_options {
    uint32_t file_type = 0;            // general.file_type (llama_ftype)
    std::vector<requant_tensor> tensors;
    std::vector<requant_kv> kv;
    int n_threads = 0;
    // Called before each tensor is written: (index in `tensors`, input bytes so far). It may throw
    // to abort (e.g. Ctrl-C); the output file is then incomplete and the caller removes it.
    std::function<void(size_t, uint64_t)> on_tensor;
};

// Reads `in_path` (F32/F16/BF16 tensors are converted; tensors already in their target type are
// copied), writes `out_path`. Throws file_error for an unreadable input, invalid_argument for a
// plan that does not match the file (unknown/missing tensor, imatrix of the wrong length, a
// quantized source tensor that would need re-quantizing) and error for write failures.
void requantize_gguf(const std::string & in_path, const std::string & out_path, const requant_options & opts);

}  // namespace autoglm
