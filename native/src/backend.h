// The compute devices of a model: the CPU backend always, plus the first GPU-type device when ggml
// was built with one (CUDA/Metal/Vulkan). Weights are placed per layer (n_gpu_layers, llama.cpp's
// -ngl meaning); compute is split across devices by ggml's backend scheduler.
#pragma once

#include <string>
#include <vector>

#include "ggml-backend.h"

namespace autoglm {

int default_thread_count();  // physical cores (SMT siblings counted once)

// The device that holds a tensor's data, as ggml names it ("CPU", "Vulkan0", "CUDA0", ...): read off
// the buffer it was allocated in, so a placement report states where the data is, not where it was
// meant to go. "none" for a tensor without a buffer.
std::string device_of(const ggml_tensor * t);

// Where ggml's own messages go: cb, or (nullptr) our default that keeps only warnings and errors.
void set_ggml_logger(ggml_log_callback cb);
// Our default logger, unless a caller (e.g. autoglm_log_set in the C API) has already chosen one.
void use_default_ggml_logger();

class backend_set {
public:
    backend_set(int n_threads, bool want_gpu);
    ~backend_set();
    backend_set(const backend_set &) = delete;
    backend_set & operator=(const backend_set &) = delete;

    ggml_backend_t cpu() const { return cpu_; }
    ggml_backend_t gpu() const { return gpu_; }  // nullptr when none
    ggml_backend_dev_t cpu_dev() const { return cpu_dev_; }
    ggml_backend_dev_t gpu_dev() const { return gpu_dev_; }
    std::vector<ggml_backend_t> all() const;  // GPU first (preferred by the scheduler), CPU last
    int n_threads() const { return n_threads_; }
    void set_n_threads(int n);
    std::string describe() const;

    // Buffer type for a weight used as src0 of `op` (a mul_mat) on the CPU: an extra (repacked) layout
    // when one supports it (e.g. Q4_0 -> interleaved blocks for the SIMD kernels), else the plain one.
    ggml_backend_buffer_type_t cpu_weight_buft(ggml_tensor * op, ggml_tensor * weight) const;
    // The same question for a weight used as src0 of an ordinary matmul (probes with a sample one).
    ggml_backend_buffer_type_t cpu_matmul_buft(ggml_tensor * weight) const;

    // Where a model's weight goes, the one rule both towers follow: on the GPU (where == gpu()) its
    // own buffer type; on the CPU a repacked layout for a matrix used in matmuls where ggml has one
    // (unless repack is off), else plain CPU memory. file_tensor: the file's tensor (its type decides
    // the repacking), nullptr when absent.
    enum class weight_use { other, matmul };
    ggml_backend_buffer_type_t weight_buft(ggml_backend_t where, ggml_tensor * file_tensor, weight_use use,
                                           bool repack = true) const;

private:
    ggml_backend_t cpu_ = nullptr;
    ggml_backend_t gpu_ = nullptr;
    ggml_backend_dev_t cpu_dev_ = nullptr;
    ggml_backend_dev_t gpu_dev_ = nullptr;
    std::vector<ggml_backend_buffer_type_t> cpu_extra_;
    int n_threads_ = 1;
};

}  // namespace autoglm
