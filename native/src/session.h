// One conversation over a text_model: the KV cache, the backend scheduler, and evaluation of
// tokens (or embeddings) in micro-batches. Positions are explicit 3-stream M-RoPE positions
// (t, h, w); text tokens use t = h = w = next position.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "eval_chain.h"
#include "ggml_ptr.h"
#include "imatrix_collector.h"
#include "kv_cache.h"
#include "op_profile.h"
#include "prompt_layout.h"
#include "tensor_dump.h"
#include "text_graph.h"
#include "text_model.h"

namespace autoglm {

struct session_params {
    uint32_t n_ctx = 8192;
    uint32_t n_batch = 512;               // micro-batch size for prompt processing
    ggml_type kv_type = GGML_TYPE_F16;
    // Fused attention kernel; on by default with an F16 cache. The F32 cache keeps the exact
    // softmax(QK^T)V path (its results match the float64 reference within 1e-4).
    enum class flash { automatic, on, off } flash_attn = flash::automatic;
    // With flash attention, the kernel for prompt processing on the CPU (cpu_attention.h): auto, ggml, avx2,
    // avx512, avx512_bf16. "auto": F32 (avx512, else avx2), BF16 for a micro-batch whose matrices run on the
    // BF16 tiles (text_graph_shape::attn_auto).
    std::string attention = "auto";
};

enum class logits_mode { none, last, all };

class session {
public:
    session(const text_model & model, const session_params & params);
    ~session() { profile_.report("text session"); }
    session(const session &) = delete;
    session & operator=(const session &) = delete;

    // Appends text tokens after what the cache holds. Returns logits rows (n_vocab floats each):
    // none, the last token's, or every token's. Throws invalid_argument when the context would overflow.
    std::vector<float> eval_tokens(const std::vector<int32_t> & tokens, logits_mode mode);

    // Appends cells [begin, end) of a laid-out prompt (text tokens and image rows with their positions).
    // Logits: as for eval_tokens, relative to these cells.
    std::vector<float> eval_cells(const std::vector<prompt_cell> & cells, size_t begin, size_t end,
                                  const std::vector<prompt_piece> & pieces, logits_mode mode);

    // A session is used by one thread at a time: an evaluation (or a generation step) that finds it in
    // use by another thread throws `busy` instead of corrupting the cache. Holding this (recursive)
    // lock makes a sequence of calls one unit; the calls below take it themselves.
    std::unique_lock<std::recursive_mutex> acquire();
    // Changes whenever the cache changes (evaluation, truncation). A generator remembers the value
    // its own last step left, so a generation continued after something else used the session fails.
    uint64_t epoch() const { return epoch_; }

    uint32_t n_past() const { return kv_.n_used(); }
    const std::vector<int32_t> & tokens() const { return kv_.tokens(); }
    uint32_t n_ctx() const { return kv_.n_ctx(); }
    void truncate(uint32_t n);
    const text_model & model() const { return model_; }
    const kv_cache & cache() const { return kv_; }
    // Set before a long evaluation; called between micro-batches with the cells evaluated so far and the
    // total of the current eval_* call. Returning false stops it (throws "aborted"; the cache is unchanged).
    std::function<bool(uint32_t n_done, uint32_t n_total)> progress;
    // Importance-matrix statistics (imatrix_collector.h), created on first use; every micro-batch adds
    // to them while imatrix().active is set. Off, the graph runs without an eval callback, as before.
    // A micro-batch without logits skips the last layer's Q, output and FFN products (dead code there),
    // so a collecting caller asks for logits (bind_imatrix.cpp imatrix_eval).
    imatrix_collector & imatrix();
    uint32_t n_batch() const { return params_.n_batch; }

private:
    std::vector<float> eval(const int32_t * tokens, const float * embd, uint32_t n,
                            const std::vector<std::array<int32_t, 3>> & pos, const std::vector<int32_t> & next_after,
                            const std::vector<uint64_t> & keys, logits_mode mode);
    uint32_t attended_cells(uint32_t n_needed) const;
    // Where eval() stands within the public call that runs it, for `progress`.
    uint32_t progress_base_ = 0, progress_total_ = 0;
    std::recursive_mutex busy_;
    uint64_t epoch_ = 0;
    void run_ubatch(const int32_t * tokens, const float * embd, uint32_t n, const std::array<int32_t, 3> * pos, uint32_t n_out,
                    float * logits_out);

    const text_model & model_;
    session_params params_;
    bool flash_attn_ = false;
    attn_kernel cpu_attn_ = attn_kernel::none;
    bool attn_auto_ = true;
    kv_cache kv_;
    ggml_sched_ptr sched_;
    std::vector<uint8_t> graph_buf_;  // metadata arena for graph building (no tensor data)
    op_profile profile_;              // AUTOGLM_PROFILE=1: per-op times over the session's life
    tensor_dump dump_;                // AUTOGLM_DUMP_TENSORS=DIR: named intermediates as .npy files
    eval_chain eval_chain_;           // the observers above (and the imatrix collector) of one computation
    std::unique_ptr<imatrix_collector> imatrix_;
    // The scheduler holds one eval callback: the profiler's alone, or this one forwarding to both.
    void attach_eval_callback();
    // The last built graph, still allocated in sched_: reused while the shape stays the same.
    ggml_ctx_ptr graph_ctx_;
    text_graph graph_;
    text_graph_shape graph_shape_;

public:
    uint64_t graphs_built_ = 0, graphs_reused_ = 0;  // counters (tests, profiling)
};

}  // namespace autoglm
