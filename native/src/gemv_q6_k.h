// Our decode matrix-vector product for Q6_K weights in the GGUF layout (issue #15): the output head of
// every K-quant mix (Q4_K_M, Q5_K_M, ...) and the whole of a Q6_K file. ggml does not repack Q6_K on
// x86, and its row-by-row dot products read it at 23-27 GB/s on a Zen 4 VM that streams 30-40.
//
// gemv_block32.h's scheme on super-blocks of 256: eight rows per step, each row's super-block
// multiplied by the activations' (quantized per 256 as ggml's Q8_K, the vec_dot type of Q6_K), the
// next eight rows prefetched into L2 as one linear run. The 6-bit weights are taken unsigned
// (q = w + 32, 0..63) and the offset's share, 32 x sum_j sc[j] x (the activations' sum over sub-block
// j of 16), subtracted once per super-block. The 16 sub-block scales (int8) ride vpmaddwd on 16-bit
// dot products: 4 products of <= 63 x 127 per vpdpbusd lane (VNNI), 2 per vpmaddubsw lane (AVX2).
// Each row gets its exact int32 super-block sum, then acc = fma(sum, d * da, acc) in block order.
// (ggml's kernel keeps 8 partial F32 sums per row, so decoded logits differ from ggml's in the last
// bits; tests/test_gemv_q6_k.py bounds them.)
#pragma once

#include <cstdint>

#include "ggml.h"

namespace autoglm {

// Whether ggml_mul_mat(w, x) should run as gemv_q6_k_mul_mat: w a 2-D Q6_K weight in a plain host
// buffer with whole rows of super-blocks, x one F32 row with contiguous elements, an AVX2 CPU, and
// AUTOGLM_GEMM not "ggml".
bool gemv_q6_k_applies(const ggml_tensor * w, const ggml_tensor * x);

// ggml_mul_mat(w, x) as one custom op on ggml's CPU threads, w a source (a host buffer).
ggml_tensor * gemv_q6_k_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x);

// y[n] = w x for w n GGUF rows of K Q6_K elements (K a multiple of 256), on n_threads threads, with
// the kernel of `isa` (a gemm_isa_name; empty: the best). Throws autoglm::invalid_argument for bad
// shapes or an ISA this machine lacks, autoglm::error on a CPU without AVX2.
void gemv_q6_k_run(const uint8_t * w, int64_t n, int64_t k, const float * x, float * y, int n_threads, const char * isa = "");

// For the profiler: our GEMV node's family name, operation count and weight bytes read, or false.
bool gemv_q6_k_node_info(const ggml_tensor * t, const char ** family, double * ops, double * bytes);

}  // namespace autoglm
