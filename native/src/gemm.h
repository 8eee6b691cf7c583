// Our prompt-processing GEMMs for quantized weights (issue #15), and the one place the decoder graph,
// the profiler and the tests reach them through. Each kernel (gemm_q4_0.h, gemm_q4_k.h, gemm_q5_0.h,
// gemm_q5_k.h, gemm_q8_0.h, gemm_affine32.h) multiplies its weight type against int8-quantized activations, reading
// ggml's repacked layout where ggml repacked the weight; decode's matrix-vector products are the
// gemv_*.h ones. Each kernel comes in AVX2, AVX-VNNI and AVX-512 VNNI variants, the block-32 ones also
// in an AMX-INT8 one (gemm_block32_amx.h), which all give the same bits; and every one in an AMX-BF16
// form (gemm_dequant_tiles.h) that rounds the operands to BF16 instead. The best the CPU and the
// OS allow is chosen at run time, whatever the build's flags.
#pragma once

#include <cstdint>
#include <vector>

#include "ggml.h"

namespace autoglm {

// True when this CPU can run our kernels (AVX2 + FMA + F16C).
bool gemm_available();

// The instruction sets our kernels come in, chosen at run time by what the CPU and the OS allow.
// avx_vnni is AVX2 plus the VEX vpdpbusd of Intel's client cores since Alder Lake (no AVX-512): the
// block-32 kernels on it, the others as avx2. It is not part of the AVX-512 levels (a Zen 4 or an Ice
// Lake has AVX-512 VNNI without it), so a machine with both runs the AVX-512 ones. avx512_bf16 is avx512_vnni plus AVX512_BF16: the same quantized kernels, and vdpbf16ps for BF16
// weights in the float GEMM (gemm_float.h). amx is avx512_bf16 plus AMX-INT8 and AMX-BF16 where this
// process may use the tiles (cpu_amx.h): the block-32 kernels and the BF16 float GEMM on the tile unit,
// the others as avx512_bf16.
enum class gemm_isa { avx2, avx_vnni, avx512_vnni, avx512_bf16, amx };
const char * gemm_isa_name(gemm_isa isa);  // "avx2", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx"
// The ISA's kernels use 512-bit vectors (avx512_vnni and above).
inline bool gemm_isa_has_avx512(gemm_isa isa) { return isa >= gemm_isa::avx512_vnni; }
// The ISA has vdpbf16ps (avx512_bf16 and above).
inline bool gemm_isa_has_bf16(gemm_isa isa) { return isa == gemm_isa::avx512_bf16 || isa == gemm_isa::amx; }
std::vector<gemm_isa> gemm_isas();         // those this machine runs, in order
// The best of them, which the graph uses; AUTOGLM_GEMM_ISA=avx2 keeps AVX2 (for comparisons).
gemm_isa gemm_best_isa();
// The ISA a test or benchmark names (empty or null: the best); throws autoglm::invalid_argument for one
// this machine does not run.
gemm_isa gemm_isa_by_name(const char * isa_name);

// How the amx ISA multiplies quantized weights for a prompt. "int8": the block-32 types' tdpbssd one
// block of 32 k at a time (gemm_block32_amx.h), the AVX2 kernel's bits; the K-quants have no int8 tile
// kernel and run their AVX-512 VNNI one. "bf16": the weights dequantized to BF16 and tdpbf16ps over the
// whole of K (gemm_dequant_tiles.h), every type we have a kernel for: each output within
// (2^-8 + K x 2^-24) x sum_k |a w| of the exact product (tested), where the int8 path's rounding of the
// activations alone allows up to 1/254 of each block's largest |a| per term; faster where the product
// has enough rows to pay for dequantizing the weights. The graph takes bf16 from the rows below on;
// AUTOGLM_AMX_TILES=int8 or bf16 fixes the choice ("auto" or unset: by rows). Measured on machine M6
// (K = N = 4096, one thread, alternating; bf16 against int8 tiles or VNNI):
//   Q4_0: 0.89x at 32 rows, 0.95-0.97x at 64, 1.02-1.06x at 96, 1.10-1.14x at 128, 1.14-1.5x at 512;
//   Q4_K: 0.76x at 32, 1.05x at 64, 1.28x at 96, 1.78x at 512 (Q6_K 0.81x, 1.14x, 1.40x, 1.90x).
constexpr int64_t amx_bf16_min_rows_block32 = 96;  // the types with int8 tiles
constexpr int64_t amx_bf16_min_rows_kquant = 64;   // the others
// Whether a product of `type` weights over m rows on `isa` runs on BF16 tiles. tiles: "int8", "bf16"
// or "" (the graph's choice, as above). Throws autoglm::invalid_argument for a bad AUTOGLM_AMX_TILES or
// for "bf16" where the ISA or the type has no such kernel.
bool gemm_uses_bf16_tiles(ggml_type type, gemm_isa isa, int64_t m, const char * tiles = "");
// Which tiles the graph's product of `type` weights over m rows runs on: "bf16", "int8", or "" where it
// uses none (no AMX, or no tile kernel for the type). For the profiler's and the benchmark's peaks.
const char * gemm_tiles(ggml_type type, int64_t m);

// Whether ggml_mul_mat(w, x) over n_rows rows should run as gemm_mul_mat: a weight type we have a
// kernel for, rows a multiple of its block and at least the variant's measured break-even K, held on
// the CPU (a host buffer or ggml's repacked one), at least 32 rows, an AVX2 CPU, and AUTOGLM_GEMM not
// set to "ggml" (which keeps ggml's kernels; "all" ignores the break-even, for tests).
bool gemm_applies(const ggml_tensor * w, int64_t n_rows);

// ggml_mul_mat(w, x) as two custom ops on ggml's CPU threads: the rows of x (F32 [K, M], contiguous
// rows) quantized, then the panels. w reaches the op through its user data, not as a source: ggml's
// repacked buffer type would refuse any op but its own matmul. Falls back to ggml_mul_mat for other x.
ggml_tensor * gemm_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x);

// For tests and benchmarks: c[M][N] = a[M][K] (F32, row-major) x w^T, w N rows of `type` blocks in the
// GGUF layout (or of F32/F16/BF16 elements: gemm_float.h), on n_threads threads, with the kernels of
// `isa` (a gemm_isa_name; empty: the best); `interleaved`: w in block32_x16.h's layout instead;
// `tiles`: as gemm_uses_bf16_tiles's.
// Throws autoglm::invalid_argument for a type without a kernel, a K that is not a multiple of its
// block or an ISA this machine lacks, autoglm::error on a CPU without AVX2.
void gemm_run(ggml_type type, const uint8_t * w, int64_t n, int64_t k, const float * a, int64_t m, float * c, int n_threads,
              const char * isa = "", bool interleaved = false, const char * tiles = "");

// For the profiler: a GEMM node's family name, operation count and the peak it is measured against
// ("int8", "f32"), or false for other nodes.
bool gemm_node_info(const ggml_tensor * t, const char ** family, double * ops, const char ** peak);

}  // namespace autoglm
