#include "cpu_amx.h"

#if defined(__x86_64__) && defined(__GNUC__)
#    include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#    include <sys/syscall.h>
#    include <unistd.h>
#endif

namespace autoglm {

namespace {

#if defined(__linux__) && defined(__x86_64__)
struct amx_bits {
    bool tile = false, int8 = false, bf16 = false, os_saves_tiles = false;
};

amx_bits read_amx_bits_once() {
    amx_bits bits;
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, nullptr) < 7) return bits;
    __cpuid_count(7, 0, a, b, c, d);
    bits.bf16 = (d >> 22) & 1;
    bits.tile = (d >> 24) & 1;
    bits.int8 = (d >> 25) & 1;
    __cpuid(1, a, b, c, d);
    if (!((c >> 27) & 1)) return bits;  // no OSXSAVE: XCR0 cannot be read
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    bits.os_saves_tiles = ((lo >> 17) & 3) == 3;  // XTILECFG and XTILEDATA
    return bits;
}

// CPUID and XCR0 do not change while the process runs: read them once.
const amx_bits & read_amx_bits() {
    static const amx_bits bits = read_amx_bits_once();
    return bits;
}
#endif

bool tiles_granted() {
#if defined(__linux__) && defined(__x86_64__)
    static const bool ok = [] {
        const amx_bits bits = read_amx_bits();
        return bits.tile && bits.os_saves_tiles && request_amx_permission();
    }();
    return ok;
#else
    return false;
#endif
}

}  // namespace

bool request_amx_permission() {
#if defined(__linux__) && defined(__x86_64__)
    static const bool granted = [] {
        constexpr long arch_req_xcomp_perm = 0x1023;  // ARCH_REQ_XCOMP_PERM, <asm/prctl.h>
        constexpr long xfeature_xtiledata = 18;       // XFEATURE_XTILEDATA
        // fails with EINVAL where the CPU or kernel has no AMX, which changes nothing
        return syscall(SYS_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) == 0;
    }();
    return granted;
#else
    return false;
#endif
}

// The tiles are granted and the CPU has the unit asked for.
static bool unit_usable(bool int8) {
#if defined(__linux__) && defined(__x86_64__)
    return tiles_granted() && (int8 ? read_amx_bits().int8 : read_amx_bits().bf16);
#else
    (void) int8;
    return false;
#endif
}

bool amx_int8_usable() { return unit_usable(true); }

bool cpu_has_avx_vnni() {
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __builtin_cpu_supports("avx2") && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4));
#else
    return false;
#endif
}
bool amx_bf16_usable() { return unit_usable(false); }

}  // namespace autoglm
