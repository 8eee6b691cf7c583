// Which of ggml's compute backends this process uses, and, in a build with CPU variants, which build
// of ggml's CPU kernels.
//
// A build with AUTOGLM_CPU_VARIANTS (the default for the Python wheel on x86-64 Linux) compiles ggml's
// CPU backend once per instruction-set level (x64 ... haswell (AVX2) ... icelake (AVX-512 VNNI), zen4
// (+BF16), sapphirerapids (+AMX)), each as a loadable module next to our library. Each module reports
// through ggml_backend_score whether this CPU *and OS* can run it (ggml's feature check reads CPUID and
// XCR0), and how good it is; the best one is loaded at first use. So one build runs on any x86-64 and
// uses AVX-512, VNNI, BF16 or AMX where the machine has them, which a compile flag alone cannot do.
// Every other backend module found there (a CUDA or Vulkan build's) is loaded too.
//
// A static build (the C library for embedding, a -DGGML_NATIVE=ON build) has one CPU backend compiled
// in, and everything here reports that.
#pragma once

#include <string>
#include <vector>

namespace autoglm {

struct cpu_variant_info {
    std::string name;  // e.g. "haswell", "icelake", "sapphirerapids"
    std::string path;  // the module's file
    int score = 0;     // ggml_backend_score: 0 = this CPU or OS cannot run it; higher = better
};

// Load the backends once per process (no-op in a static build). The CPU variant is the best-scoring
// one, or the one named by the environment variable AUTOGLM_CPU_VARIANT (for tests and for comparing
// kernels); the modules are looked for in AUTOGLM_BACKEND_DIR, else in the directory of the binary
// that holds this code. Throws autoglm::error naming what to do when the variant named cannot run here,
// does not exist, or no CPU module is found. Thread-safe; after a failure the next call tries again.
void load_backends();

bool has_cpu_variants();                      // built with AUTOGLM_CPU_VARIANTS
std::string backend_dir();                    // where the modules are looked for ("" in a static build)
std::vector<cpu_variant_info> cpu_variants();  // the CPU modules present, best score first
std::string cpu_variant();                    // the loaded one's name; "built-in" in a static build
// The loaded CPU backend's features as ggml reports them (e.g. "AVX2", "AVX512_VNNI", "AMX_INT8",
// "REPACK"), each "NAME" or "NAME=value".
std::vector<std::string> cpu_features();

}  // namespace autoglm
