// Where the time goes inside one graph computation: with AUTOGLM_PROFILE=1 in the environment, the
// scheduler stops after every node (its eval callback) and the time of each node is added to its op
// (e.g. MUL_MAT, FLASH_ATTN_EXT); a table goes to stderr after the graph. Stopping after each node
// costs some speed (one thread barrier per node), so totals are a little above a normal run; the
// shares are what to read. Off (and free) unless the variable is set.
#pragma once

#include <chrono>
#include <map>
#include <string>

#include "ggml-backend.h"

namespace autoglm {

class op_profile {
public:
    static bool enabled();
    // Installs the callback on `sched` when enabled; call before ggml_backend_sched_graph_compute.
    void attach(ggml_backend_sched_t sched);
    // Prints and clears the table (when enabled), labelled with `what`.
    void report(const char * what);
    // The callback attach() installs (user = this): public so a session can forward to it from its own.
    static bool eval_cb(ggml_tensor * t, bool ask, void * user);

private:
    struct row { double ms = 0; int n = 0; };
    std::map<std::string, row> by_op_;
    std::chrono::steady_clock::time_point last_;
    bool started_ = false;
};

}  // namespace autoglm
