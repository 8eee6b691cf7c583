// Our decode matrix-vector product for block-32 weights in the GGUF layout (issue #15): Q8_0, Q5_0
// and Q4_0 rows that ggml does not repack (it repacks only Q4_0 on x86), against one token's
// activations quantized as ggml's Q8_0. Q4_K_M files hold their ffn_down in Q5_0 and Q8_0 (the 9B's
// FFN width, 13,696, is no multiple of 256), and Q8_0 files are Q8_0 throughout; ggml's row-by-row
// dot products read those at 9-13 GB/s on a Zen 4 VM that streams 30-40.
//
// Eight rows at a time, each block of each row multiplied by the block of activations: on AVX-512
// VNNI two rows per 512-bit vpdpbusd, as unsigned u = w + offset (Q5_0's 5th bits applied as a mask);
// on AVX2 by vpmaddubsw + vpmaddwd, Q8_0 as |w| x sign(a, w) (exact: the activations stay within
// +-127), the others as u. The eight rows' lane sums are reduced into one vector, so that each row
// gets its exact int32 block sum (the offset's share added back) and then the prompt GEMM's F32 step,
// acc = fma(sum, dw * da, acc) in block order: the same bits as gemm.h's kernels for a one-row batch.
// The next eight rows (contiguous in the GGUF layout) are prefetched into L2 as one linear stream
// while the current ones are multiplied.
#pragma once

#include <cstdint>

#include "ggml.h"

namespace autoglm {

// Whether ggml_mul_mat(w, x) should run as gemv_block32_mul_mat: w a 2-D Q8_0, Q5_0 or Q4_0 weight in
// a plain host buffer (not ggml's repacked one), x one F32 row with contiguous elements, an AVX2
// CPU, AUTOGLM_GEMM not "ggml".
bool gemv_block32_applies(const ggml_tensor * w, const ggml_tensor * x);

// ggml_mul_mat(w, x) as one custom op (w a source: a host buffer); each thread quantizes the row and
// multiplies a range of rows in whole groups of 8.
ggml_tensor * gemv_block32_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x);

// y[n] = w x for w n GGUF rows of K `type` elements (Q8_0, Q5_0 or Q4_0), on n_threads threads, with
// the kernel of `isa` (a gemm_isa_name; empty: the best). Throws autoglm::invalid_argument for another
// type, bad shapes or an ISA this machine lacks, autoglm::error on a CPU without AVX2.
void gemv_block32_run(ggml_type type, const uint8_t * w, int64_t n, int64_t k, const float * x, float * y, int n_threads,
                      const char * isa = "");

// For the profiler: our GEMV node's family name, operation count and weight bytes read, or false.
bool gemv_block32_node_info(const ggml_tensor * t, const char ** family, double * ops, double * bytes);

}  // namespace autoglm
