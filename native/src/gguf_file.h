// A GGUF file opened for reading: metadata with typed, checked accessors, tensor infos, and the
// file mapped into memory so tensor data can be copied (or used in place) without staging.
// Every error names the file and the key/tensor, and what was expected.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ggml.h"
#include "gguf.h"

namespace autoglm {

class gguf_file {
public:
    explicit gguf_file(const std::string & path);  // throws autoglm::error (missing/unreadable/truncated/not GGUF)
    ~gguf_file();
    gguf_file(const gguf_file &) = delete;
    gguf_file & operator=(const gguf_file &) = delete;

    const std::string & path() const { return path_; }
    gguf_context * ctx() const { return gguf_; }

    bool has(const std::string & key) const;
    std::string get_str(const std::string & key) const;
    std::string get_str(const std::string & key, const std::string & def) const;
    uint32_t get_u32(const std::string & key) const;  // accepts any integer type that fits
    uint32_t get_u32(const std::string & key, uint32_t def) const;
    float get_f32(const std::string & key) const;
    float get_f32(const std::string & key, float def) const;
    bool get_bool(const std::string & key, bool def) const;
    std::vector<int32_t> get_i32_array(const std::string & key) const;  // integer arrays of any width
    std::vector<float> get_f32_array(const std::string & key) const;
    std::vector<std::string> get_str_array(const std::string & key) const;

    // Tensor data in the mapped file (nullptr if absent). Sizes were checked against the file on open.
    ggml_tensor * tensor(const std::string & name) const;
    const uint8_t * tensor_data(const std::string & name) const;
    // Done with [data, data + n) of the mapping: its pages leave this process's resident set (they
    // stay in the page cache). Loading copies every weight into backend buffers, so without this the
    // peak RSS of a load would be the weights twice.
    void release(const void * data, size_t n) const;
    // Asks the kernel to read [data, data + n) of the mapping ahead, in the background: a tensor that
    // stays mapped and is read a few rows at a time (the token embeddings) would otherwise fault
    // its pages in one disk read per row, on the first use of each token.
    void prefetch(const void * data, size_t n) const;
    // Copies [data, data + n) of the mapping to dst by reading the file (pread): the kernel copies from
    // its page cache without faulting the mapping's pages into this process one 4 KB page at a time.
    // Falls back to copying from the mapping where a read fails.
    void read(const void * data, void * dst, size_t n) const;
    uint32_t n_tensors() const;

private:
    int64_t key_id(const std::string & key) const;  // throws when missing
    std::string path_;
    gguf_context * gguf_ = nullptr;
    ggml_context * meta_ = nullptr;
    void * map_ = nullptr;
    size_t size_ = 0;
    int fd_ = -1;  // kept open for read()
};

}  // namespace autoglm
