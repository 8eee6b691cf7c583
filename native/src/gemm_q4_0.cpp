// ref: ggml-cpu quants.c ggml_vec_dot_q4_0_q8_0 (the arithmetic: int8 dots per 32-block, scaled by
//      both blocks' scales) and quantize_row_q8_0 (activations: d = max|x| / 127, q = round(x / d)).
#include "gemm_q4_0.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "error.h"
#include "gemm_panel.h"
#include "ggml-backend.h"
#include "ggml.h"

#if AUTOGLM_GEMM_X86
#    include "avx2_reduce.h"
#endif

namespace autoglm {

#if AUTOGLM_GEMM_X86
#    pragma GCC push_options
#    pragma GCC target("avx2,fma,f16c")
namespace {

// Quantized activations, one row per token: q[k] int8 | d[nb] F32 (the blocks' scales) | s8[nb] int32
// (8 x the block's sum of q: the Q4_0 offset's share).
struct q8_rows {
    uint8_t * base;
    int64_t k, nb;
    size_t row_bytes() const { return (size_t) k + (size_t) nb * 8; }
    int8_t * q(int64_t r) const { return (int8_t *) (base + r * row_bytes()); }
    float * d(int64_t r) const { return (float *) (base + r * row_bytes() + k); }
    int32_t * s8(int64_t r) const { return (int32_t *) (base + r * row_bytes() + k + nb * 4); }
};

// Rows [r0, r1) of a into q8 blocks (round to nearest even, as ggml's AVX2 quantize_row_q8_0).
void quantize(const float * a, size_t a_row_stride, int64_t k, int64_t r0, int64_t r1, uint8_t * q_bytes) {
    const q8_rows out{q_bytes, k, k / q4_0_block};
    const int64_t nb = k / q4_0_block;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t r = r0; r < r1; ++r) {
        for (int64_t b = 0; b < nb; ++b) {
            const float * x = (const float *) ((const uint8_t *) a + r * a_row_stride) + b * q4_0_block;
            __m256 v[4];
            __m256 amax = _mm256_setzero_ps();
            for (int i = 0; i < 4; ++i) {
                v[i] = _mm256_loadu_ps(x + 8 * i);
                amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
            }
            // as ggml's AVX2 quantize_row_q8_0: q = round(x * 127 / max), the scale max / 127 kept in F16,
            // so that the dot products and scales are ggml's exactly (only the F32 summation order differs)
            const float mx = avx2::hmax(amax);
            const float d = mx / 127.0f;
            const __m256 id = _mm256_set1_ps(mx != 0.0f ? 127.0f / mx : 0.0f);
            __m256i q[4];
            __m256i sum = _mm256_setzero_si256();
            for (int i = 0; i < 4; ++i) {
                q[i] =
                    _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
                sum = _mm256_add_epi32(sum, q[i]);
            }
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            p = _mm256_permutevar8x32_epi32(p, order);
            _mm256_storeu_si256((__m256i *) (out.q(r) + b * q4_0_block), p);
            out.d(r)[b] = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
            out.s8(r)[b] = 8 * avx2::hsum(sum);
        }
    }
}

// Columns [c0, c0 + 8) of w (fewer at the right edge: zero weights, zero scale) as unsigned nibble
// values, 8 vectors per block: vector j holds k = 4j .. 4j+3 of each column. `repacked`: w is in
// ggml's CPU_REPACK layout for Q4_0 on x86 (block_q4_0x8 per 8 columns and block: the 8 F16 scales,
// then the columns' nibble bytes in chunks of 8 (bytes 0-7 of columns 0..7, then bytes 8-15), each
// byte XOR 0x88); else the GGUF layout (N rows of 18-byte blocks).
void unpack_panel(const uint8_t * w, int64_t n, int64_t nb, int64_t c0, bool repacked, __m256i * panel, float * dw) {
    const __m128i low = _mm_set1_epi8(0x0F);
    const __m128i flip = _mm_set1_epi8((char) 0x88);
    constexpr size_t x8_bytes = 8 * 2 + 8 * 16;  // one block_q4_0x8
    for (int64_t b = 0; b < nb; ++b) {
        __m256i v[8];
        for (int c = 0; c < 8; ++c) {
            if (c0 + c >= n) {
                v[c] = _mm256_setzero_si256();
                dw[b * 8 + c] = 0.0f;
                continue;
            }
            uint16_t h;
            __m128i qs;
            if (repacked) {
                const uint8_t * x8 = w + ((c0 / 8) * nb + b) * x8_bytes;
                std::memcpy(&h, x8 + 2 * c, 2);
                const __m128i lo8 = _mm_loadl_epi64((const __m128i *) (x8 + 16 + 8 * c));
                const __m128i hi8 = _mm_loadl_epi64((const __m128i *) (x8 + 16 + 64 + 8 * c));
                qs = _mm_xor_si128(_mm_unpacklo_epi64(lo8, hi8), flip);
            } else {
                const uint8_t * blk = w + ((c0 + c) * nb + b) * q4_0_block_bytes;
                std::memcpy(&h, blk, 2);
                qs = _mm_loadu_si128((const __m128i *) (blk + 2));
            }
            dw[b * 8 + c] = ggml_fp16_to_fp32(h);
            // elements 0..15 are the low nibbles, 16..31 the high ones
            v[c] = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), low), _mm_and_si128(qs, low));
        }
        gemm::transpose_columns(v, panel + b * 8);
    }
}

// Four rows (rows[0..3], possibly repeated at the bottom edge) x one panel -> out[4][8].
inline void kernel_4x8(const __m256i * panel, const float * dw, int64_t nb, const q8_rows & a, const int64_t * rows,
                       float out[4][8]) {
    const __m256i ones = _mm256_set1_epi16(1);
    const int8_t * q[4];
    for (int r = 0; r < 4; ++r) q[r] = a.q(rows[r]);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; ++b) {
        __m256i s[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
        const __m256i * wv = panel + b * 8;
        for (int j = 0; j < 8; ++j) {
            const __m256i w = _mm256_load_si256(wv + j);
            for (int r = 0; r < 4; ++r) {
                int32_t a4;
                std::memcpy(&a4, q[r] + b * q4_0_block + 4 * j, 4);
                s[r] = _mm256_add_epi16(s[r], _mm256_maddubs_epi16(w, _mm256_set1_epi32(a4)));
            }
        }
        const __m256 dwv = _mm256_loadu_ps(dw + b * 8);
        for (int r = 0; r < 4; ++r) {
            const __m256i dot = _mm256_sub_epi32(_mm256_madd_epi16(s[r], ones), _mm256_set1_epi32(a.s8(rows[r])[b]));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dwv, _mm256_set1_ps(a.d(rows[r])[b])), acc[r]);
        }
    }
    for (int r = 0; r < 4; ++r) _mm256_storeu_ps(out[r], acc[r]);
}

// Panels [p0, p1) of 8 columns for every row; c row r starts at c + r * c_row_stride (floats).
void panels(const uint8_t * w, bool repacked, int64_t n, int64_t k, const uint8_t * q, int64_t m, float * c, int64_t c_row_stride,
            int64_t p0, int64_t p1) {
    const q8_rows a{const_cast<uint8_t *>(q), k, k / q4_0_block};
    const int64_t nb = k / q4_0_block;
    gemm::aligned_bytes panel_bytes((size_t) nb * 8 * sizeof(__m256i));
    auto * panel = panel_bytes.as<__m256i>();
    std::vector<float> dw((size_t) nb * 8);
    gemm::panel_loop(
        n, m, c, c_row_stride, p0, p1, [&](int64_t c0) { unpack_panel(w, n, nb, c0, repacked, panel, dw.data()); },
        [&](const int64_t * rows, float out[4][8]) { kernel_4x8(panel, dw.data(), nb, a, rows, out); });
}

}  // namespace
#    pragma GCC pop_options
#endif  // AUTOGLM_GEMM_X86

const gemm::kernel & gemm_q4_0_kernel() {
    static const gemm::kernel k{GGML_TYPE_Q4_0,
                                q4_0_block,
                                q4_0_block + 8,  // int8 q, F32 scale, int32 8 x sum(q)
                                "gemm_q4_0",
                                "gemm_q4_0_quantize",
                                "GEMM q4_0 (ours)",
                                "GEMM q4_0 rows to int8 (ours)",
                                AUTOGLM_GEMM_FN(quantize),
                                AUTOGLM_GEMM_FN(panels)};
    return k;
}

}  // namespace autoglm
