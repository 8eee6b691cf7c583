// The arithmetic peak of this machine for each family of kernels, so that profiles and benchmarks can
// say how close a kernel gets (AUTOGLM_PROFILE, `autoglm-gguf bench`).
//
// How it is derived: peak = cores x measured clock x operations per core per cycle of the widest
// instruction the loaded CPU kernels use. Both are measured on one core, not read from /proc, CPUID or
// a vendor table (VMs and turbo make the clock wrong, and cores of one ISA differ in units: an AVX2
// core retires one or two 256-bit FMAs per cycle, and one 256-bit vpmaddubsw every second cycle up to
// two per cycle; Zen 1, measured: one FMA, half a vpmaddubsw):
//   clock: a chain of dependent integer adds retires exactly one add per cycle on every x86-64 and
//          AArch64 core, so adds per second = cycles per second;
//   per cycle: 12 independent chains of the instruction (enough to hide its latency), instructions
//          per second over the clock, rounded to a power of two. Each run lasts about a millisecond
//          and the best of 9 counts, so a run preempted on a busy machine does not count.
// The instructions (one multiply-add = 2 operations):
//   f32  (F32/F16 weights): vfmadd231ps, 256-bit (8 lanes) or 512-bit (16) where AVX-512 is in use.
//   bf16 (BF16 weights): AVX512_BF16 vdpbf16ps (16 lanes x 2 products); otherwise the f32 rate
//        (converted to F32).
//   int8 (quantized weights x int8 activations): AVX-512 VNNI vpdpbusd (64 byte products), else
//        AVX-VNNI vpdpbusd (32), else AVX2 vpmaddubsw (32; a kernel that also spends a vpmaddwd per
//        vpmaddubsw gets at most half).
//   amx_bf16, amx_int8 (our tile kernels, where this process may use AMX): tdpbf16ps (16 x 16 x 32
//        products) and tdpbssd (16 x 16 x 64), four accumulator tiles, operands held in tiles. Intel's
//        figure is one every 16 cycles (1024 and 2048 per cycle); a VM whose core shares its tile unit,
//        or a clock that drops under AMX, measures less (a 2-vCPU Emerald Rapids VM: one per 32-64).
//   Where nothing is measured (AArch64, x86 without AVX2): NEON FMA 2 x 4 lanes = 16, NEON sdot
//        2 x 16 x 2 = 64, SSE 8 and 64.
// These are the instruction throughputs, the ceiling no kernel passes; real kernels also load,
// unpack and scale, so 50-80% is good.
#pragma once

#include <string>

namespace autoglm {

struct cpu_peak_info {
    double clock_ghz = 0;  // measured on one core (0 where this architecture has no measurement)
    int threads = 1;       // the cores the peak is for
    // operations per cycle per core, and the instructions they assume
    double f32_per_cycle = 0, bf16_per_cycle = 0, int8_per_cycle = 0, amx_int8_per_cycle = 0, amx_bf16_per_cycle = 0;
    std::string f32_isa, bf16_isa, int8_isa, amx_int8_isa, amx_bf16_isa;

    // GOP/s for `threads` cores
    double f32_gops() const { return f32_per_cycle * clock_ghz * threads; }
    double bf16_gops() const { return bf16_per_cycle * clock_ghz * threads; }
    double int8_gops() const { return int8_per_cycle * clock_ghz * threads; }
    double amx_int8_gops() const { return amx_int8_per_cycle * clock_ghz * threads; }  // 0 without AMX
    double amx_bf16_gops() const { return amx_bf16_per_cycle * clock_ghz * threads; }  // 0 without AMX-BF16
};

// For `threads` cores, with the instruction sets of the CPU backend in use (cpu_features()). The clock
// and the rates are measured once per process (~50 ms).
cpu_peak_info cpu_peak(int threads);

double measured_clock_ghz();

}  // namespace autoglm
