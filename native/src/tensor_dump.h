// AUTOGLM_DUMP_TENSORS=DIR: every named intermediate of each graph computation ("attn_norm-3",
// "l_out-3", "v_l_out-7", ...; graph_util.h's named()) written as a NumPy .npy file (float32, shape in
// NumPy order: a [n_embd, n_tokens] ggml tensor is (n_tokens, n_embd)) under DIR/NNNN-WHAT/, NNNN
// counting this process's computations and WHAT saying whose ("text", "vision"). A parity failure is
// then traced to the first layer whose output differs from PyTorch's hooks on the same input
// (tests/test_tensor_dump.py shows how). Debugging only: the scheduler stops after each dumped node.
// Off (and free) unless the variable is set.
#pragma once

#include <set>
#include <string>

#include "ggml.h"

namespace autoglm {

class tensor_dump {
public:
    static bool enabled();
    // Starts one computation's directory. Never throws: a directory that cannot be made is reported
    // on stderr once and nothing is dumped.
    void begin(const char * what) noexcept;
    // The scheduler's callback (user = this); see eval_chain.h.
    static bool eval_cb(ggml_tensor * t, bool ask, void * user);

    // Whether a node is dumped: one of our names (not ggml's "(view)", "(reshaped)" decorations), F32
    // or F16, contiguous.
    static bool wants(const ggml_tensor * t);

private:
    void write(const ggml_tensor * t) noexcept;
    std::string dir_;  // this computation's directory; empty: not dumping
    std::set<std::string> written_;
};

}  // namespace autoglm
