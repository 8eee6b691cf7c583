#include "cpu_peak.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <set>
#include <vector>

#include "backend_loader.h"

namespace autoglm {

namespace {

// `n` x 64 dependent adds; returns seconds. The loop counter is a separate chain that runs alongside.
// The addend is a register, not an immediate: Intel's Golden Cove and later cores fold chains of
// immediate adds at rename (measured on a Xeon: 17 "GHz" with `add $1`, 2.95 with `add reg`).
double time_add_chain(uint64_t n) {
    uint64_t x = 0, one = 1;
    const auto t0 = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < n; ++i) {
#if defined(__x86_64__) && defined(__GNUC__)
        asm volatile(".rept 64\n\taddq %1, %0\n\t.endr" : "+r"(x) : "r"(one));
#elif defined(__aarch64__) && defined(__GNUC__)
        asm volatile(".rept 64\n\tadd %0, %0, %1\n\t.endr" : "+r"(x) : "r"(one));
#else
        (void) x;
        (void) one;
        return 0;
#endif
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

double measured_clock_ghz() {
    static std::once_flag once;
    static double ghz = 0;
    std::call_once(once, [] {
        time_add_chain(200000);  // wake the core up to its working clock
        // The best of a few short runs: a preempted run can only look slower.
        double best = 0;
        for (int rep = 0; rep < 5; ++rep) {
            const uint64_t n = 200000;  // 12.8 M adds, ~4 ms at 3 GHz
            const double s = time_add_chain(n);
            if (s > 0) best = std::max(best, (double) n * 64 / s / 1e9);
        }
        ghz = best;
    });
    return ghz;
}

cpu_peak_info cpu_peak(int threads) {
    cpu_peak_info p;
    p.threads = std::max(1, threads);
    p.clock_ghz = measured_clock_ghz();
    std::set<std::string> f;
    for (const std::string & s : cpu_features()) f.insert(s.substr(0, s.find('=')));
    auto has = [&](const char * name) { return f.count(name) > 0; };
#if defined(__x86_64__) && defined(__GNUC__)
    const bool amd = __builtin_cpu_is("amd");
#else
    const bool amd = false;
#endif
    if (has("AVX512")) {
        p.f32_per_cycle = amd ? 32 : 64;
        p.f32_isa = amd ? "AVX-512 FMA (one 512-bit FMA/cycle, AMD)" : "AVX-512 FMA (two 512-bit FMA/cycle)";
    } else if (has("FMA") || has("AVX2")) {
        p.f32_per_cycle = 32;
        p.f32_isa = "AVX2 FMA (two 256-bit FMA/cycle)";
    } else if (has("NEON") || has("ARM_FMA")) {
        p.f32_per_cycle = 16;
        p.f32_isa = "NEON FMA (two 128-bit FMA/cycle)";
    } else {
        p.f32_per_cycle = 8;
        p.f32_isa = "SSE (one 128-bit multiply + add/cycle)";
    }
    if (has("AVX512_BF16")) {
        p.bf16_per_cycle = 2 * p.f32_per_cycle;
        p.bf16_isa = "AVX512_BF16 vdpbf16ps";
    } else {
        p.bf16_per_cycle = p.f32_per_cycle;
        p.bf16_isa = "converted to F32: " + p.f32_isa;
    }
    if (has("AVX512_VNNI")) {
        p.int8_per_cycle = amd ? 128 : 256;
        p.int8_isa = amd ? "AVX-512 VNNI vpdpbusd (one 512-bit/cycle, AMD)" : "AVX-512 VNNI vpdpbusd (two 512-bit/cycle)";
    } else if (has("AVX_VNNI")) {
        p.int8_per_cycle = 128;
        p.int8_isa = "AVX-VNNI vpdpbusd (two 256-bit/cycle)";
    } else if (has("AVX2")) {
        p.int8_per_cycle = 128;
        p.int8_isa = "AVX2 vpmaddubsw (two 256-bit/cycle)";
    } else if (has("DOTPROD")) {
        p.int8_per_cycle = 64;
        p.int8_isa = "NEON sdot (two 128-bit/cycle)";
    } else {
        p.int8_per_cycle = 64;
        p.int8_isa = "SSE pmaddubsw (two 128-bit/cycle)";
    }
    if (has("AMX_INT8")) p.amx_int8_per_cycle = 2048;
    return p;
}

}  // namespace autoglm
