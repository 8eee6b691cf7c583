// Importance-matrix statistics ("imatrix"), gathered while a session evaluates prompts: for every
// weight matrix W of the decoder, the per-input-column sum of x[j]^2 over all rows x that W was
// multiplied with, and the number of those rows. llama-quantize turns sum / count into per-column
// weights for the quantization error (the columns that see large activations matter more).
//
// ref: llama.cpp tools/imatrix/imatrix.cpp (IMatrixCollector::collect_imatrix) for which products
// count and what is summed; python/autoglm_gguf/imatrix.py writes the file.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ggml.h"

namespace autoglm {

class imatrix_collector {
public:
    struct entry {
        std::vector<double> sums;  // one per input column (src1->ne[0]); double: millions of squares add up
        int64_t count = 0;         // rows (tokens) summed
    };

    // process_output: also collect the output head ("output.weight"), as llama-imatrix --process-output.
    explicit imatrix_collector(bool process_output = false) : process_output_(process_output) {}

    // The scheduler's "ask" question: is `t` a product whose input we sum? Pure (no side effects), so
    // the follow-up call can ask it again.
    bool wants(const ggml_tensor * t) const;
    // The follow-up, once `t` has been computed: adds its input rows. Never throws (it runs inside
    // ggml's compute loop); a problem is kept in error() and the statistics of `t` are left as they were.
    void collect(const ggml_tensor * t) noexcept;
    // The scheduler's eval callback (user = this collector): wants() when asked, then collect().
    // ref: llama.cpp tools/imatrix/imatrix.cpp (the ask/collect protocol).
    static bool eval_cb(ggml_tensor * t, bool ask, void * user) {
        auto * self = static_cast<imatrix_collector *>(user);
        if (ask) return self->wants(t);
        self->collect(t);
        return true;
    }

    // The first problem since the last take_error(), then cleared ("" when none). The session turns it
    // into an exception after the graph, so the evaluation fails as a whole.
    std::string take_error();

    bool active = false;  // the session installs its eval callback only while this is set
    bool process_output() const { return process_output_; }
    void set_process_output(bool on) { process_output_ = on; }
    const std::map<std::string, entry> & stats() const { return stats_; }
    void clear() { stats_.clear(); }

private:
    void add(const ggml_tensor * t);
    bool process_output_;
    std::map<std::string, entry> stats_;
    std::vector<uint8_t> host_;  // src1 copied off a device buffer
    std::vector<double> scratch_;
    std::string error_;
};

// The weight's own name in a tensor name the scheduler may have decorated: a weight copied to another
// backend is named "CUDA0#blk.0.attn_k.weight#0". ref: imatrix.cpp filter_tensor_name.
std::string imatrix_weight_name(const char * name);

}  // namespace autoglm
