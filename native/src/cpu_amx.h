// Whether this process may run AMX tile instructions (Intel Sapphire Rapids and later), and the
// tile configuration our AMX kernels load.
//
// Three things must hold: the CPU has AMX-TILE and the unit asked for (CPUID leaf 7), the OS saves the
// tile state (XCR0 bits 17 and 18), and Linux has granted this process the tile data
// (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)); without the last the first tile instruction
// is SIGILL. A compile flag says none of this, so kernels ask here at run time.
#pragma once

#include <cstdint>

namespace autoglm {

// AVX-VNNI (the VEX vpdpbusd on 256-bit vectors; CPUID leaf 7, sub-leaf 1, EAX bit 4), read directly:
// not every compiler's __builtin_cpu_supports knows the name. The OS saves the 256-bit state it needs
// wherever AVX2 runs. Not an AMX feature, but asked of CPUID the same way.
bool cpu_has_avx_vnni();

// Asks Linux for the tile state once per process (harmless where there is no AMX); true if granted.
bool request_amx_permission();

// AMX-TILE + AMX-INT8 (tdpbssd and friends) are usable by this process.
bool amx_int8_usable();
// AMX-TILE + AMX-BF16 (tdpbf16ps) are usable by this process.
bool amx_bf16_usable();

// The 64-byte operand of ldtilecfg (palette 1): per tile its bytes per row and its rows.
struct alignas(64) amx_tile_config {
    uint8_t palette = 1;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
    void set(int tile, int n_rows, int bytes_per_row) {
        rows[tile] = (uint8_t) n_rows;
        colsb[tile] = (uint16_t) bytes_per_row;
    }
};
static_assert(sizeof(amx_tile_config) == 64, "ldtilecfg reads 64 bytes");

// ldtilecfg and tilerelease. Not GCC's _tile_loadconfig: its asm names only the first 8 bytes of the
// configuration as read, so the compiler may drop the stores that fill the rest (seen with GCC 12: the
// tiles left unconfigured, the first tile load SIGILL). Call only where amx_int8_usable() or
// amx_bf16_usable().
#if defined(__x86_64__) && defined(__GNUC__)
inline void amx_load_tiles(const amx_tile_config & cfg) { __asm__ volatile("ldtilecfg %0" ::"m"(cfg)); }
inline void amx_release_tiles() { __asm__ volatile("tilerelease" ::: "memory"); }
#endif

}  // namespace autoglm
