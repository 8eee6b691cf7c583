// Where the time goes inside one graph computation: with AUTOGLM_PROFILE=1 in the environment, the
// scheduler stops after every node (its eval callback) and the time of each node is added to its
// kernel family: the op, and for a matmul its weight type and the buffer the weight lives in (e.g.
// "MUL_MAT q4_0 CPU_REPACK", "MUL_MAT f16", "FLASH_ATTN_EXT"). For matmuls and attention the table
// also gives the operations done, the achieved GOP/s, and their share of this machine's peak for that
// family (cpu_peak.h says how the peak is derived). Stopping after each node costs some speed (one
// thread barrier per node), so totals are a little above a normal run; the shares are what to read.
// AUTOGLM_PROFILE=shapes splits the matrix products further by weight shape. Off (and free) unless
// the variable is set.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "ggml-backend.h"

namespace autoglm {

class op_profile {
public:
    struct row {
        std::string family;
        double ms = 0;
        int n = 0;          // nodes
        double ops = 0;     // arithmetic operations (a multiply-add = 2); 0 where not counted
        double bytes = 0;   // weight bytes a matrix-vector product reads (its rate is reported in GB/s)
        std::string peak;   // which peak applies: "f32", "bf16", "int8", "amx_int8", "amx_bf16" or "" (none)
        bool on_cpu = true;
    };

    static bool enabled();
    // AUTOGLM_PROFILE=shapes: also split matrix products by their weight's shape (K x N).
    static bool by_shape();
    // Starts timing a computation; then install eval_cb (user = this) on its scheduler, alone or in
    // an eval_chain. n_threads: the CPU threads the graph runs on (for the peak).
    void attach(int n_threads);
    // Prints and clears the table (when enabled), labelled with `what`.
    void report(const char * what);
    // The scheduler's eval callback (user = this): stops after every node.
    static bool eval_cb(ggml_tensor * t, bool ask, void * user);

    // The family of a node and the operations it does (exposed for tests).
    static row classify(const ggml_tensor * t);

private:
    std::map<std::string, row> by_family_;
    std::chrono::steady_clock::time_point last_;
    bool started_ = false;
    int n_threads_ = 1;
};

}  // namespace autoglm
