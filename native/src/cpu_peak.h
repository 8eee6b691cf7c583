// The arithmetic peak of this machine for each family of kernels, so that profiles and benchmarks can
// say how close a kernel gets (AUTOGLM_PROFILE, `autoglm-gguf bench`).
//
// How it is derived: peak = cores x measured clock x (operations per core per cycle of the widest
// instruction the loaded CPU kernels use). The clock is measured, not read from /proc or CPUID (VMs
// and turbo make those wrong): a chain of dependent integer adds retires exactly one add per cycle on
// every x86-64 and AArch64 core, so adds per second = cycles per second. Operations per cycle come
// from the vendors' published throughputs (one multiply-add = 2 operations):
//   f32  (F32/F16 weights): AVX2 FMA 2 x 8 lanes = 32/cycle; AVX-512 on Intel 2 x 16 = 64, on AMD
//        Zen 4 one 512-bit FMA per cycle = 32; NEON 2 x 4 = 16 (generic AArch64).
//   bf16 (BF16 weights): AVX512_BF16 vdpbf16ps, twice the f32 rate; AMX-BF16 (tile dot product,
//        16x16x32 per 16 cycles) 1024/cycle; otherwise the f32 rate (converted to F32).
//   int8 (quantized weights x int8 activations): AVX2 vpmaddubsw, 32 byte products per instruction,
//        2 per cycle = 128/cycle (a kernel that also spends a vpmaddwd per vpmaddubsw gets at most
//        half); AVX-VNNI vpdpbusd (256-bit) 2 x 32 x 2 = 128; AVX-512 VNNI Intel 2 x 64 x 2 = 256,
//        Zen 4 128; AMX-INT8 (16x16x64 per 16 cycles) 2048; NEON sdot 2 x 16 x 2 = 64.
// These are the instruction throughputs, the ceiling no kernel passes; real kernels also load,
// unpack and scale, so 50-80% is good.
#pragma once

#include <string>

namespace autoglm {

struct cpu_peak_info {
    double clock_ghz = 0;  // measured on one core (0 where this architecture has no measurement)
    int threads = 1;       // the cores the peak is for
    // operations per cycle per core, and the instructions they assume
    double f32_per_cycle = 0, bf16_per_cycle = 0, int8_per_cycle = 0, amx_int8_per_cycle = 0;
    std::string f32_isa, bf16_isa, int8_isa;

    // GOP/s for `threads` cores
    double f32_gops() const { return f32_per_cycle * clock_ghz * threads; }
    double bf16_gops() const { return bf16_per_cycle * clock_ghz * threads; }
    double int8_gops() const { return int8_per_cycle * clock_ghz * threads; }
    double amx_int8_gops() const { return amx_int8_per_cycle * clock_ghz * threads; }  // 0 without AMX
};

// For `threads` cores, with the instruction sets of the CPU backend in use (cpu_features()). The clock
// is measured once per process (~50 ms).
cpu_peak_info cpu_peak(int threads);

double measured_clock_ghz();

}  // namespace autoglm
