// What this build of the core was compiled with: ggml version and the backends/devices present.
#pragma once

#include <string>
#include <vector>

namespace autoglm {

struct device_info {
    std::string backend;      // registry name, e.g. "CPU", "CUDA", "Vulkan"
    std::string name;         // device name, e.g. "CUDA0"
    std::string description;  // e.g. the GPU model
    std::string type;         // "cpu", "gpu", "igpu" or "accel"
    size_t memory_total = 0;  // bytes (0 when unknown)
};

std::string ggml_version_string();
std::string ggml_commit_string();
std::vector<std::string> backend_names();
std::vector<device_info> devices();

}  // namespace autoglm
