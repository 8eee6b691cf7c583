#include "cpu_peak.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <set>
#include <string>

#include "backend_loader.h"
#include "cpu_amx.h"

#if defined(__x86_64__) && defined(__GNUC__)
#    define AUTOGLM_PEAK_X86 1
#    include <cpuid.h>
#    include <immintrin.h>
#endif

namespace autoglm {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

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
    return seconds_since(t0);
}

// Independent chains per throughput probe: 12 cover a latency of 5 cycles at two per cycle and leave
// registers for the operands.
constexpr int chains = 12;

#if AUTOGLM_PEAK_X86
// Throughput probes: `chains` independent chains of one instruction, n rounds; each returns seconds. The chains
// feed themselves, so nothing can be hoisted out of the loop, and their sum goes to a volatile sink
// so nothing is dropped. Each carries the target of the instruction it times and runs only where the
// CPU has it.
volatile int sink;

// The body of a probe: acc = STEP (an expression in x, the chain's last value) on every chain, n rounds.
// (A macro, not a template taking lambdas: a lambda does not inherit its function's target.)
#    define AUTOGLM_PROBE(V, INIT, STEP, FOLD)                          \
        V acc[chains];                                                  \
        for (int c = 0; c < chains; ++c) acc[c] = (INIT);               \
        const auto t0 = std::chrono::steady_clock::now();               \
        for (uint64_t i = 0; i < n; ++i) {                              \
            _Pragma("GCC unroll 12") for (int c = 0; c < chains; ++c) { \
                const V x = acc[c];                                     \
                acc[c] = (STEP);                                        \
            }                                                           \
        }                                                               \
        const double s = seconds_since(t0);                             \
        int total = 0;                                                  \
        for (int c = 0; c < chains; ++c) total += (int) FOLD(acc[c]);   \
        sink = total;                                                   \
        return s

__attribute__((target("avx2,fma"))) double time_fma_ymm(uint64_t n) {
    __m256 a = _mm256_set1_ps(1.0f), b = _mm256_set1_ps(1e-3f);
    asm("" : "+x"(a), "+x"(b));  // opaque, so the multiply-add cannot be simplified
    AUTOGLM_PROBE(__m256, _mm256_set1_ps(1.0f), _mm256_fmadd_ps(a, b, x), _mm256_cvtss_f32);
}

__attribute__((target("avx2"))) double time_maddubs_ymm(uint64_t n) {
    __m256i b = _mm256_set1_epi8(3);
    asm("" : "+x"(b));
    AUTOGLM_PROBE(__m256i, _mm256_set1_epi8(1), _mm256_maddubs_epi16(x, b), _mm256_cvtsi256_si32);
}

__attribute__((target("avx2,avxvnni"))) double time_dpbusd_ymm(uint64_t n) {
    __m256i a = _mm256_set1_epi8(1), b = _mm256_set1_epi8(3);
    asm("" : "+x"(a), "+x"(b));
    AUTOGLM_PROBE(__m256i, _mm256_setzero_si256(), _mm256_dpbusd_avx_epi32(x, a, b), _mm256_cvtsi256_si32);
}

__attribute__((target("avx512f"))) double time_fma_zmm(uint64_t n) {
    __m512 a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(1e-3f);
    asm("" : "+v"(a), "+v"(b));
    AUTOGLM_PROBE(__m512, _mm512_set1_ps(1.0f), _mm512_fmadd_ps(a, b, x), _mm512_cvtss_f32);
}

__attribute__((target("avx512f,avx512vnni"))) double time_dpbusd_zmm(uint64_t n) {
    __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(3);
    asm("" : "+v"(a), "+v"(b));
    AUTOGLM_PROBE(__m512i, _mm512_setzero_si512(), _mm512_dpbusd_epi32(x, a, b), _mm512_cvtsi512_si32);
}

__attribute__((target("avx512f,avx512bf16"))) double time_dpbf16_zmm(uint64_t n) {
    __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1.0f), _mm512_set1_ps(1.0f)), b = a;
    asm("" : "+v"(a), "+v"(b));
    AUTOGLM_PROBE(__m512, _mm512_setzero_ps(), _mm512_dpbf16_ps(x, a, b), _mm512_cvtss_f32);
}
#    undef AUTOGLM_PROBE

// The tile unit: n rounds of 4 tile products into 4 independent accumulators (tiles 0-3, 16 x 16 F32
// or int32 each) from operand tiles 4-7 that never change, as our kernels' 32 x 32 blocks issue them
// (four chains hide a product's latency); no loads or stores in the loop. Seconds. Call only where
// amx_bf16_usable() (amx_int8_usable()); the caller releases the tiles after its last run (released
// after every run, the runs measured a quarter of the rate on machine M6).
template <bool INT8>
__attribute__((target("amx-tile,amx-bf16,amx-int8"))) double time_tile_products(uint64_t n) {
    amx_tile_config cfg;
    for (int t = 0; t < 8; ++t) cfg.set(t, 16, 64);
    alignas(64) static uint32_t operand[256];
    for (uint32_t & x : operand) x = INT8 ? 0x01010101u : 0x3F803F80u;  // bytes of 1, or BF16 pairs of 1.0
    amx_load_tiles(cfg);
    _tile_loadd(4, operand, 64);  // (the tile is part of the instruction: no loop)
    _tile_loadd(5, operand, 64);
    _tile_loadd(6, operand, 64);
    _tile_loadd(7, operand, 64);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const auto t0 = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < n; ++i) {
        if constexpr (INT8) {
            _tile_dpbssd(0, 4, 6);
            _tile_dpbssd(1, 4, 7);
            _tile_dpbssd(2, 5, 6);
            _tile_dpbssd(3, 5, 7);
        } else {
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    }
    alignas(64) static uint32_t out[256];
    _tile_stored(0, out, 64);  // the products' results are read: nothing is dropped
    const double s = seconds_since(t0);
    sink = (int) out[0];
    return s;
}
#endif

// Seconds of the fastest of 9 runs of `probe(n)` after a warm-up: a preempted run can only look slower.
// The clock's runs and the probes' last about a millisecond each, short enough for some to run
// unpreempted on a busy machine, and equally long, so that being preempted does not favour either.
template <class Probe>
double best_seconds(Probe probe, uint64_t n) {
    probe(n / 4);
    double best = 0;
    for (int rep = 0; rep < 9; ++rep) {
        const double s = probe(n);
        if (s > 0 && (best == 0 || s < best)) best = s;
    }
    return best;
}

// Operations per cycle per core of an instruction doing `ops` operations (a multiply-add = 2), timed
// by `probe`, rounded to a power of two: the units retire a whole number of such instructions every
// one, two or four cycles, and rounding absorbs the few percent a shared machine adds to either timing.
// `ops_per_round`: the operations of one round of the probe (default: `chains` instructions of `ops`).
template <class Probe>
double measured_ops_per_cycle(Probe probe, double ops, uint64_t n = 100000, double ops_per_round = 0) {
    const double ghz = measured_clock_ghz();
    const double s = best_seconds(probe, n);  // default n: 1.2 M instructions, 0.6-2.4 M cycles
    if (ghz <= 0 || s <= 0) return 0;
    const double per_cycle = (double) n * (ops_per_round > 0 ? ops_per_round : chains * ops) / s / (ghz * 1e9);
    return std::exp2(std::round(std::log2(per_cycle)));
}

}  // namespace

double measured_clock_ghz() {
    static std::once_flag once;
    static double ghz = 0;
    std::call_once(once, [] {
        time_add_chain(200000);  // wake the core up to its working clock
        const uint64_t n = 25000;  // 1.6 M adds (cycles)
        const double s = best_seconds(time_add_chain, n);
        ghz = s > 0 ? (double) n * 64 / s / 1e9 : 0;
    });
    return ghz;
}

namespace {

// The measured rates, once per process.
struct measured_rates {
    double f32 = 0, bf16 = 0, int8 = 0, amx_int8 = 0, amx_bf16 = 0;  // operations per cycle per core; 0 = not measured
    std::string f32_isa, bf16_isa, int8_isa, amx_int8_isa, amx_bf16_isa;
};

std::string rate_label(const char * instr, double ops_per_cycle, double ops_per_instr) {
    char buf[128];
    const double per = ops_per_cycle / ops_per_instr;
    if (per >= 1) std::snprintf(buf, sizeof buf, "%s, %g/cycle measured", instr, per);
    else std::snprintf(buf, sizeof buf, "%s, one per %g cycles measured", instr, 1 / per);
    return buf;
}

const measured_rates & rates(const std::set<std::string> & f) {
    static std::once_flag once;
    static measured_rates r;
    std::call_once(once, [&] {
        auto has = [&](const char * name) { return f.count(name) > 0; };
#if AUTOGLM_PEAK_X86
        __builtin_cpu_init();
        // f32: 16 (512-bit) or 8 (256-bit) lanes, a multiply-add each
        if (has("AVX512") && __builtin_cpu_supports("avx512f")) {
            r.f32 = measured_ops_per_cycle(time_fma_zmm, 32);
            r.f32_isa = rate_label("AVX-512 FMA", r.f32, 32);
        } else if ((has("AVX2") || has("FMA")) && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
            r.f32 = measured_ops_per_cycle(time_fma_ymm, 16);
            r.f32_isa = rate_label("AVX2 FMA", r.f32, 16);
        }
        // bf16: vdpbf16ps, 16 lanes x 2 products
        if (has("AVX512_BF16") && __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512f")) {
            r.bf16 = measured_ops_per_cycle(time_dpbf16_zmm, 64);
            r.bf16_isa = rate_label("AVX512_BF16 vdpbf16ps", r.bf16, 64);
        }
        // int8: vpdpbusd 64 (512-bit) or 32 (256-bit) products; vpmaddubsw 32
        if (has("AVX512_VNNI") && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512f")) {
            r.int8 = measured_ops_per_cycle(time_dpbusd_zmm, 128);
            r.int8_isa = rate_label("AVX-512 VNNI vpdpbusd", r.int8, 128);
        } else if (has("AVX_VNNI") && cpu_has_avx_vnni()) {
            r.int8 = measured_ops_per_cycle(time_dpbusd_ymm, 64);
            r.int8_isa = rate_label("AVX-VNNI vpdpbusd", r.int8, 64);
        } else if (has("AVX2") && __builtin_cpu_supports("avx2")) {
            r.int8 = measured_ops_per_cycle(time_maddubs_ymm, 64);
            r.int8_isa = rate_label("AVX2 vpmaddubsw", r.int8, 64);
        }
        // the tiles: a tile product is 16 x 16 outputs of 32 BF16 pairs (2 x 8,192 operations) or 64
        // int8 products (2 x 16,384); Intel's figure is one per 16 cycles. 20,000 rounds of 4: 1.3 M cycles
        // at that rate (a VM sharing the core's tile unit, or a lower clock under AMX, measures fewer).
        if (amx_int8_usable() && amx_bf16_usable()) {
            r.amx_bf16 = measured_ops_per_cycle(time_tile_products<false>, 16384, 20000, 4 * 16384);
            r.amx_bf16_isa = rate_label("AMX-BF16 tdpbf16ps", r.amx_bf16, 16384);
            r.amx_int8 = measured_ops_per_cycle(time_tile_products<true>, 32768, 20000, 4 * 32768);
            r.amx_int8_isa = rate_label("AMX-INT8 tdpbssd", r.amx_int8, 32768);
            amx_release_tiles();
        }
#else
        (void) has;
#endif
    });
    return r;
}

}  // namespace

cpu_peak_info cpu_peak(int threads) {
    cpu_peak_info p;
    p.threads = std::max(1, threads);
    p.clock_ghz = measured_clock_ghz();
    std::set<std::string> f;
    for (const std::string & s : cpu_features()) f.insert(s.substr(0, s.find('=')));
    auto has = [&](const char * name) { return f.count(name) > 0; };
    const measured_rates & m = rates(f);
    // Where no probe ran (ARM, an x86 without AVX2): the vendors' figures for the usual cores.
    if (m.f32 > 0) {
        p.f32_per_cycle = m.f32;
        p.f32_isa = m.f32_isa;
    } else if (has("NEON") || has("ARM_FMA")) {
        p.f32_per_cycle = 16;
        p.f32_isa = "NEON FMA (two 128-bit FMA/cycle)";
    } else {
        p.f32_per_cycle = 8;
        p.f32_isa = "SSE (one 128-bit multiply + add/cycle)";
    }
    if (m.bf16 > 0) {
        p.bf16_per_cycle = m.bf16;
        p.bf16_isa = m.bf16_isa;
    } else {
        p.bf16_per_cycle = p.f32_per_cycle;
        p.bf16_isa = "converted to F32: " + p.f32_isa;
    }
    if (m.int8 > 0) {
        p.int8_per_cycle = m.int8;
        p.int8_isa = m.int8_isa;
    } else if (has("DOTPROD")) {
        p.int8_per_cycle = 64;
        p.int8_isa = "NEON sdot (two 128-bit/cycle)";
    } else {
        p.int8_per_cycle = 64;
        p.int8_isa = "SSE pmaddubsw (two 128-bit/cycle)";
    }
    // the tiles where this process may use them: our kernels' (gemm_isa amx), whichever ggml variant
    // is loaded (ggml's own AMX buffer type is not used: backend.cpp)
    if (m.amx_bf16 > 0 && m.amx_int8 > 0) {
        p.amx_int8_per_cycle = m.amx_int8;
        p.amx_bf16_per_cycle = m.amx_bf16;
        p.amx_int8_isa = m.amx_int8_isa;
        p.amx_bf16_isa = m.amx_bf16_isa;
    }
    return p;
}

}  // namespace autoglm
