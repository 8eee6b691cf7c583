// ref: ggml-common.h block_q5_0, block_q5_1, block_q4_1 (the GGUF blocks this layout regroups).
#include "block32_x16.h"

#include <cstring>

#include "gemm.h"
#include "gemm_panel.h"

namespace autoglm {

namespace {

constexpr int32_t mark_value = 0x36315842;  // "BX16"

}  // namespace

bool x16_applies(const ggml_tensor * w) {
    return x16_layout_of(w->type) && ggml_n_dims(w) == 2 && w->ne[1] % x16_rows == 0 && w->ne[0] % 32 == 0 && gemm_available() &&
           !gemm::disabled_by_env();
}

void x16_repack(ggml_type type, const uint8_t * src, int64_t n, int64_t k, uint8_t * dst) {
    const x16_layout & l = *x16_layout_of(type);
    const int64_t nb = k / 32;
    for (int64_t g = 0; g < n / x16_rows; ++g) {
        for (int64_t b = 0; b < nb; ++b) {
            uint8_t * rec = dst + (size_t) (g * nb + b) * l.record_bytes;
            uint64_t masks[8] = {};
            for (int r = 0; r < x16_rows; ++r) {
                const uint8_t * blk = src + (size_t) ((g * x16_rows + r) * nb + b) * l.block_bytes;
                std::memcpy(rec + 2 * r, blk, 2);
                if (l.m_at) std::memcpy(rec + l.m_at + 2 * r, blk + l.src_m, 2);
                if (l.masks_at) {
                    uint32_t qh;
                    std::memcpy(&qh, blk + l.src_qh, 4);
                    for (int c = 0; c < 4; ++c) {
                        masks[2 * c] |= (uint64_t) ((qh >> (4 * c)) & 0xF) << (4 * r);
                        masks[2 * c + 1] |= (uint64_t) ((qh >> (16 + 4 * c)) & 0xF) << (4 * r);
                    }
                }
                for (int c = 0; c < 4; ++c) std::memcpy(rec + l.qs_at + 64 * c + 4 * r, blk + l.src_qs + 4 * c, 4);
            }
            if (l.masks_at) std::memcpy(rec + l.masks_at, masks, sizeof(masks));
        }
    }
}

void x16_mark(ggml_tensor * w) { std::memcpy(w->op_params, &mark_value, sizeof(mark_value)); }

bool x16_marked(const ggml_tensor * w) {
    int32_t v;
    std::memcpy(&v, w->op_params, sizeof(v));
    return w->op == GGML_OP_NONE && v == mark_value && x16_layout_of(w->type);
}

}  // namespace autoglm
