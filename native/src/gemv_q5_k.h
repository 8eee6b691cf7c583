// Our decode matrix-vector product for Q5_K weights in the GGUF layout (issue #15): the bulk of a
// Q5_K_M file, which ggml does not repack on x86 and reads row by row.
//
// gemv_q6_k.h's scheme: eight rows per step, each row's super-block multiplied by the activations'
// (ggml's Q8_K), the next eight rows prefetched into L2 as one linear run. The 5-bit weights are
// unsigned (0..31), so each row's super-block gives two exact integers: isum = sum_j sc[j] x (the
// sub-block's dot product) and msum = sum_j m[j] x (the activations' sub-block sum), and the F32 steps
// are gemm_q5_k.h's: acc += cvt(isum) (d da), acc_min += cvt(msum) (dmin da), y = acc - acc_min, so a
// token gets the same bits decoded or in a prompt. The eight rows' 6-bit scales and mins are unpacked
// together (AVX-512: four rows per register).
#pragma once

#include <cstdint>

#include "ggml.h"

namespace autoglm {

// Whether ggml_mul_mat(w, x) should run as gemv_q5_k_mul_mat: w a 2-D Q5_K weight in a plain host
// buffer with whole rows of super-blocks, x one F32 row with contiguous elements, an AVX2 CPU, and
// AUTOGLM_GEMM not "ggml".
bool gemv_q5_k_applies(const ggml_tensor * w, const ggml_tensor * x);

// ggml_mul_mat(w, x) as one custom op on ggml's CPU threads, w a source (a host buffer).
ggml_tensor * gemv_q5_k_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x);

// y[n] = w x for w n GGUF rows of K Q5_K elements (K a multiple of 256), on n_threads threads, with
// the kernel of `isa` (a gemm_isa_name; empty: the best). Throws autoglm::invalid_argument for bad
// shapes or an ISA this machine lacks, autoglm::error on a CPU without AVX2.
void gemv_q5_k_run(const uint8_t * w, int64_t n, int64_t k, const float * x, float * y, int n_threads, const char * isa = "");

// For the profiler: our GEMV node's family name, operation count and weight bytes read, or false.
bool gemv_q5_k_node_info(const ggml_tensor * t, const char ** family, double * ops, double * bytes);

}  // namespace autoglm
