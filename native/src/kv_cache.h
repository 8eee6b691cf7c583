// The decoder's key/value cache for one sequence: per layer K and V of shape [head_dim*n_head_kv, n_ctx]
// on the device that holds that layer, plus CPU-side bookkeeping per cell (its token, or -1 for an
// embedding such as an image token, and its 3 M-RoPE position streams) used for prefix reuse.
// Cells are filled in sequence order, so the causal mask is "key cell <= query cell".
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "ggml_ptr.h"
#include "text_model.h"

namespace autoglm {

class kv_cache {
public:
    kv_cache(const text_model & model, uint32_t n_ctx, ggml_type type);

    ggml_tensor * k(int il) const { return k_[il]; }
    ggml_tensor * v(int il) const { return v_[il]; }
    uint32_t n_ctx() const { return n_ctx_; }
    ggml_type type() const { return type_; }
    size_t bytes() const;
    std::vector<std::string> devices() const;  // per layer: the device holding its K and V

    uint32_t n_used() const { return (uint32_t) tokens_.size(); }
    const std::vector<int32_t> & tokens() const { return tokens_; }
    const std::vector<uint64_t> & keys() const { return keys_; }  // per cell: token id, or image (hash, row) key
    int32_t next_pos() const { return next_pos_; }  // 1 + the largest position stream value so far
    void append(int32_t token, uint64_t key, const std::array<int32_t, 3> & pos, int32_t next_pos_after);
    void truncate(uint32_t n);  // forget cells >= n (their K/V are overwritten by later writes)

private:
    uint32_t n_ctx_;
    ggml_type type_;
    std::vector<ggml_tensor *> k_, v_;
    std::vector<ggml_ctx_ptr> ctxs_;
    std::vector<ggml_buf_ptr> bufs_;
    std::vector<int32_t> tokens_;
    std::vector<uint64_t> keys_;
    std::vector<std::array<int32_t, 3>> pos_;
    std::vector<int32_t> next_pos_hist_;  // next_pos after each cell, to restore it on truncate
    int32_t next_pos_ = 0;
};

}  // namespace autoglm
