// Weights of one GGUF file on their devices: a no_alloc context per buffer type, tensors created with
// the file's type and the shape the architecture requires (a mismatch names tensor, shapes and file),
// then allocated and filled from the mapped file. Shared by the text model and the vision tower.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "backend.h"
#include "ggml_ptr.h"
#include "gguf_file.h"

namespace autoglm {

std::string shape_str(const int64_t * ne, int n);

// What a weight is used for decides the storage types the graph can take; anything else is refused
// at load (ggml would abort or jump through a null kernel at the first compute).
enum class tensor_role {
    weight,   // a matrix for ggml_mul_mat or rows for ggml_get_rows: F32, F16, BF16 or a quantized block type
    f32,      // operands of element-wise ops and interpolation (norms, biases, position tables): F32 only
};

class weight_store {
public:
    // `what` names the expected content in errors ("GLM-4 model", "GLM-4V mmproj"). `f` must outlive
    // the calls to create() and load() (the models build their weights inside their constructors).
    weight_store(const gguf_file & f, std::string what);

    // The file's tensor `name` with shape `ne` in buffer type `buft`; nullptr if absent and optional.
    // A 1-D tensor is always a tensor_role::f32 operand (norm weights, biases).
    ggml_tensor * create(const std::string & name, std::vector<int64_t> ne, ggml_backend_buffer_type_t buft, bool required = true,
                         tensor_role role = tensor_role::weight);
    // A CPU tensor whose data stays in the file's mapping instead of being copied: its pages enter the
    // resident set only when read. For tensors read a few rows at a time (the token embedding's
    // get_rows) that is most of their size saved. The gguf_file must then outlive the weights.
    // Falls back to an ordinary CPU copy when the data is not aligned for ggml.
    ggml_tensor * create_mapped(const std::string & name, std::vector<int64_t> ne);
    // create() with the tensor stored as `type` (F32, F16 or BF16) instead of the file's F32/F16/BF16:
    // converted row by row at load (e.g. the vision tower's matrices in BF16 for AVX512_BF16 / AMX).
    // A quantized file tensor is kept as it is.
    ggml_tensor * create_as(const std::string & name, std::vector<int64_t> ne, ggml_backend_buffer_type_t buft, ggml_type type);
    // create() into a plain CPU buffer, the data regrouped at load into our interleaved layout for
    // Q5_0/Q5_1/Q4_1 matrices (block32_x16.h; the tensor is marked so): only for a weight that
    // x16_applies() to and that only our kernels will multiply.
    ggml_tensor * create_interleaved(const std::string & name, std::vector<int64_t> ne);
    // A tensor the file does not hold (filled by the caller after load()).
    ggml_tensor * create_extra(ggml_backend_buffer_type_t buft, ggml_type type, int64_t ne0, int64_t ne1, const char * name);

    // From then on, tensors that would be copied as they are into a plain CPU buffer (no repacking, no
    // conversion, aligned in the file) are read in place from the mapping instead, as llama.cpp's mmap
    // loading does: a load costs no copy, and the pages are read (or found in the page cache) when the
    // first graph touches them. The gguf_file must then outlive the weights. AUTOGLM_MMAP=0 keeps copies.
    void read_cpu_weights_in_place() { in_place_ = true; }

    // Allocates every buffer and copies the file's data; progress(fraction) returning false aborts.
    void load(const std::function<bool(float)> & progress = nullptr);
    size_t bytes() const { return bytes_; }                 // allocated (copied) weight memory
    size_t mapped_bytes() const { return mapped_bytes_; }   // weights read in place from the mapping

private:
    ggml_context * ctx_for(ggml_backend_buffer_type_t buft);
    // The file's tensor after the shape and type checks; nullptr when absent and not required.
    ggml_tensor * checked(const std::string & name, std::vector<int64_t> ne, bool required, tensor_role role) const;
    std::string alloc_failure(ggml_context * c, ggml_backend_buffer_type_t buft) const;
    // Moves the pending tensors that qualify for read_cpu_weights_in_place() onto one buffer over
    // their span of the mapping.
    void map_plain_cpu_weights();
    struct pending;
    // Sets the tensors of ggml's repacking CPU buffer (list), several at a time; adds their bytes to
    // done, reporting progress(done / total) on the calling thread. Throws what a set or progress threw,
    // or autoglm::aborted.
    void set_repacked(const std::vector<pending> & list, size_t & done, size_t total,
                      const std::function<bool(float)> & progress);

    const gguf_file & f_;
    std::string what_;
    std::map<ggml_backend_buffer_type_t, ggml_context *> ctx_of_;
    std::vector<ggml_ctx_ptr> ctxs_;
    std::vector<ggml_buf_ptr> bufs_;
    struct pending {
        ggml_tensor * t;
        const uint8_t * data;
        ggml_type file_type;  // differs from t->type when converted at load
        bool interleave = false;  // regrouped at load (create_interleaved)
    };
    std::vector<pending> pending_;
    std::vector<std::pair<ggml_tensor *, const uint8_t *>> mapped_;
    ggml_ctx_ptr mapped_ctx_;
    bool in_place_ = false;
    size_t bytes_ = 0;
    size_t mapped_bytes_ = 0;
};

}  // namespace autoglm
