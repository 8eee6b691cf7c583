// Our decode matrix-vector product for Q4_0 weights in ggml's repacked layout (issue #15): one token's
// activations (quantized to int8 as ggml's Q8_0) times every weight column, in an AVX-512 VNNI and an
// AVX2 variant (the best the CPU and the OS allow, as our GEMMs: gemm.h).
//
// Decode reads every weight once per token, so it is bound by memory bandwidth, not arithmetic; ggml's
// repacked matrix-vector kernel read its weights at ~22 GB/s on a Zen 4 VM whose plain read stream
// does 30-42 GB/s. Two things make ours reach the read stream:
// - arithmetic to spare: on AVX-512 one vpdpbusd per 64 weights, the nibbles unpacked with one
//   vpternlogd each (the high nibbles kept x16 and their sum shifted back), two 8-column blocks per
//   F32 step; on AVX2 four vpmaddubsw summed in 16 bits (exact) per vpmaddwd;
// - the weights read as one sequential stream per thread (a thread's panels are contiguous), with
//   software prefetch 18 KB ahead into L2 and 1 KB ahead into L1, which the hardware prefetcher alone
//   did not keep full (bench/README.md).
// Each column's result is the same F32 chain as our prompt GEMM's (gemm.h): per block the exact int32
// sum, then acc = fma(sum, dw * da, acc) in block order. So a token's matmul outputs are the same bits
// whether it is decoded alone or processed in a prompt's micro-batch, on either variant; they also
// equal ggml's AVX2 kernel's, which takes the same steps.
#pragma once

#include <cstdint>

#include "ggml.h"

namespace autoglm {

// Whether ggml_mul_mat(w, x) should run as gemv_q4_0_mul_mat: w a 2-D Q4_0 weight in ggml's repacked
// CPU buffer (CPU_REPACK), x one F32 row with contiguous elements, an AVX2 CPU, and AUTOGLM_GEMM not
// "ggml".
bool gemv_q4_0_applies(const ggml_tensor * w, const ggml_tensor * x);

// ggml_mul_mat(w, x) as one custom op on ggml's CPU threads: each thread quantizes the row (a few
// microseconds) and multiplies a contiguous range of 8-column panels. w reaches the op through its
// user data (ggml's repacked buffer type refuses other ops on its tensors).
ggml_tensor * gemv_q4_0_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x);

// ggml's repacked layout of Q4_0 on x86 (block_q4_0x8), from the GGUF layout (n rows of k/32 blocks;
// n a multiple of 8): per 8 rows and block, the 8 F16 scales, then the rows' 16 nibble bytes in
// chunks of 8 (bytes 0-7 of rows 0..7, then bytes 8-15), each byte XOR 0x88. For tests and benchmarks.
// ref: ggml-cpu repack.cpp make_block_q4_0x8 (interleave 8)
void repack_q4_0x8(const uint8_t * gguf, int64_t n, int64_t k, uint8_t * out);

// y[n] = w x for w in the repacked layout (n rows of K, n a multiple of 8), on n_threads threads, with
// the kernel of `isa` (a gemm_isa_name; empty: the best). Throws autoglm::invalid_argument for bad
// shapes or an ISA this machine lacks, autoglm::error on a CPU without AVX2.
void gemv_q4_0_run(const uint8_t * w_repacked, int64_t n, int64_t k, const float * x, float * y, int n_threads,
                   const char * isa = "");

// For the profiler: our GEMV node's family name, operation count and weight bytes read, or false.
bool gemv_q4_0_node_info(const ggml_tensor * t, const char ** family, double * ops, double * bytes);

}  // namespace autoglm
