// Where a block-32 weight type's GEMM variants meet: one struct of `panels` functions, one per ISA
// (gemm_panel.h's kernel), from the type's AVX2 panel unpacker.
// Include only where AUTOGLM_GEMM_X86 (gemm_panel.h) is set.
#pragma once

#include <cstdint>

#include "gemm_block32.h"
#include "gemm_block32_amx.h"
#include "gemm_block32_avxvnni.h"
#include "gemm_block32_vnni.h"
#include "gemm_dequant_tiles.h"

namespace autoglm::gemm {

// The `panels` entry points of a block-32 weight type (kernel::panels, panels_avx512_vnni, panels_amx,
// panels_avx_vnni and panels_amx_bf16) from its panel unpacker: unpack(w, repacked, n, nb, c0, panel)
// fills columns [c0, c0 + 8) with u = w + offset (an affine type: w = dw * u + mw, offset unused).
template <int planes, int quads_per_widen,
          void (*unpack)(const uint8_t * w, bool repacked, int64_t n, int64_t nb, int64_t c0,
                         const block32_panel<planes> & panel),
          int offset, bool affine = false>
struct block32_entry {
    // unpack as the kernels call it: columns [c0, c0 + 8) of w into a panel
    struct unpacker {
        const uint8_t * w;
        bool repacked;
        int64_t n, nb;
        void operator()(int64_t c0, const block32_panel<planes> & panel) const { unpack(w, repacked, n, nb, c0, panel); }
    };
    __attribute__((target("avx2,fma,f16c"))) static void panels(const uint8_t * w, bool repacked, int64_t n, int64_t k,
                                                                const uint8_t * q, int64_t m, float * c, int64_t ldc, int64_t p0,
                                                                int64_t p1) {
        block32_panels<planes, quads_per_widen, affine>(n, k, q, m, c, ldc, p0, p1, unpacker{w, repacked, n, k / q8_0_block});
    }
    AUTOGLM_TARGET_AVX512_VNNI static void panels_vnni(const uint8_t * w, bool repacked, int64_t n, int64_t k, const uint8_t * q,
                                                       int64_t m, float * c, int64_t ldc, int64_t p0, int64_t p1) {
        block32_vnni_panels<planes, affine>(n, k, q, m, c, ldc, p0, p1, unpacker{w, repacked, n, k / q8_0_block});
    }
    AUTOGLM_TARGET_AMX_INT8 static void panels_amx(const uint8_t * w, bool repacked, int64_t n, int64_t k, const uint8_t * q,
                                                   int64_t m, float * c, int64_t ldc, int64_t p0, int64_t p1) {
        block32_amx_panels<planes, offset, affine>(n, k, q, m, c, ldc, p0, p1, unpacker{w, repacked, n, k / q8_0_block});
    }
    AUTOGLM_TARGET_AVX_VNNI static void panels_avx_vnni(const uint8_t * w, bool repacked, int64_t n, int64_t k, const uint8_t * q,
                                                        int64_t m, float * c, int64_t ldc, int64_t p0, int64_t p1) {
        block32_avxvnni_panels<planes, affine>(n, k, q, m, c, ldc, p0, p1, unpacker{w, repacked, n, k / q8_0_block});
    }
    // q: the activations as gemm_bf16_rows.h packs them, not int8
    AUTOGLM_TARGET_AMX_BF16_DEQUANT static void panels_amx_bf16(const uint8_t * w, bool repacked, int64_t n, int64_t k,
                                                                const uint8_t * q, int64_t m, float * c, int64_t ldc, int64_t p0,
                                                                int64_t p1) {
        const int64_t nb = k / q8_0_block;
        const unpacker cols{w, repacked, n, nb};
        block32_panel_storage<planes> lo_cols(nb), hi_cols(nb);
        block32_wide_panel wide(nb);
        dequant_tile_panels(n, k, q, m, c, ldc, p0, p1, [&](int64_t c0, auto tile) AUTOGLM_TARGET_AMX_BF16_DEQUANT {
            cols(c0, lo_cols.panel);
            cols(c0 + 8, hi_cols.panel);
            join_panels<planes>(lo_cols.panel, hi_cols.panel, nb, wide.v(), wide.dw.data(), wide.mw.data());
            for (int64_t b = 0; b < nb; ++b) {
                const float * dw = wide.dw.data() + b * 16;
                float mw[16];  // w = dw x (u - offset) = dw x u - offset x dw, both products exact
                for (int i = 0; i < 16; ++i) mw[i] = affine ? wide.mw[(size_t) (b * 16 + i)] : -(float) offset * dw[i];
                quads_to_bf16_tile(wide.v() + b * 8, dw, mw, dw, mw, tile(b));
            }
        });
    }
};

}  // namespace autoglm::gemm
