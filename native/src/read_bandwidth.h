// The rate at which this machine's cores can read memory, the ceiling of a bandwidth-bound kernel (the
// decode GEMVs), as cpu_peak.h is that of the compute-bound ones (AUTOGLM_PROFILE, `autoglm-gguf bench`,
// bench/compare_llamacpp.py's bandwidth figure).
//
// How it is measured: `threads` threads each first touch, then sum, their own part of `mib` MiB (at
// least 32 MiB a thread: far beyond its share of any cache), with 256-bit loads where the CPU has AVX2
// (four independent accumulators, so the adds never wait on each other), else with 64-bit integer loads
// the compiler vectorizes. All bytes read over the time from the start signal to the last thread's end,
// best of `reps` passes. Only reads: a copy (STREAM's convention, read + write) moves bytes a GEMV never
// writes, and on some machines the two differ (measured on a Zen 1 VM, two cores: copy 26.6-27.1 GB/s,
// this 21.9-22.4).
#pragma once

#include <cstdint>

namespace autoglm {

// GB/s. Throws autoglm::invalid_argument for threads < 1, mib < 1 or reps < 1, autoglm::out_of_memory
// when the buffers cannot be had, autoglm::error when the threads cannot be started.
double read_bandwidth_gbs(int threads, int64_t mib = 256, int reps = 5);

}  // namespace autoglm
