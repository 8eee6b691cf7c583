// What our GEMVs on the GGUF layout (gemv_block32, gemv_q5_k, gemv_q6_k) share around their kernels: a
// thread's share of the rows in whole groups, the checks and thread pool of their test entry points,
// and the profiler's figures for their nodes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "error.h"
#include "gemm.h"
#include "gemm_panel.h"
#include "ggml.h"

namespace autoglm::gemm {

// Thread ith's rows [r0, r1) of n, in whole groups of `group` rows (r0 >= r1: none).
inline void group_share(int64_t n, int group, int ith, int nth, int64_t & r0, int64_t & r1) {
    const int64_t groups = (n + group - 1) / group;
    r0 = std::min(n, groups * ith / nth * group);
    r1 = std::min(n, groups * (ith + 1) / nth * group);
}

// A GEMV's run function (for tests and benchmarks): checks the shape and the CPU, then thread(isa, t, nt)
// on n_threads threads. Throws autoglm::invalid_argument for bad shapes or an ISA this machine lacks,
// autoglm::error on a CPU without AVX2; `what` names the kernel ("gemv q6_K").
template <class Thread>
void run_host_gemv(const std::string & what, int64_t n, int64_t k, int64_t block, int n_threads, const char * isa_name,
                   Thread thread) {
    if (n <= 0 || k <= 0 || k % block != 0) {
        throw invalid_argument(what + ": N must be positive and K a multiple of " + std::to_string(block) + " (got N " +
                               std::to_string(n) + ", K " + std::to_string(k) + ")");
    }
    if (!gemm_available()) throw error(what + ": this CPU lacks AVX2/FMA/F16C");
    const gemm_isa isa = gemm_isa_by_name(isa_name);
    on_threads(n_threads, [&](int t, int nt) { thread(isa, t, nt); });
}

// The profiler's figures for a node of op fn (host_gemv_node: the weight is src[0], the rows src[1],
// each row a pass over the weight), or false.
inline bool host_gemv_node_info(const ggml_tensor * t, ggml_custom_op_t fn, const char * family_name, const char ** family,
                                double * ops, double * bytes) {
    if (!is_custom_op(t, fn)) return false;
    const ggml_tensor * w = t->src[0];
    const double rows = (double) t->src[1]->ne[1];
    *family = family_name;
    *ops = 2.0 * (double) w->ne[0] * (double) w->ne[1] * rows;
    *bytes = (double) ggml_nbytes(w) * rows;
    return true;
}

}  // namespace autoglm::gemm
