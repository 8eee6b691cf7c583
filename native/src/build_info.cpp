#include "build_info.h"

#include "backend_loader.h"

#include "ggml-backend.h"
#include "ggml.h"

namespace autoglm {

std::string ggml_version_string() { return ggml_version(); }
std::string ggml_commit_string() { return ggml_commit(); }

std::vector<std::string> backend_names() {
    load_backends();
    std::vector<std::string> out;
    for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
        out.emplace_back(ggml_backend_reg_name(ggml_backend_reg_get(i)));
    }
    return out;
}

static const char * device_type_name(enum ggml_backend_dev_type t) {
    switch (t) {
        case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
        default: break;  // newer ggml device kinds
    }
    return "unknown";
}

std::vector<device_info> devices() {
    load_backends();
    std::vector<device_info> out;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        device_info d;
        d.backend = ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev));
        d.name = ggml_backend_dev_name(dev);
        d.description = ggml_backend_dev_description(dev);
        d.type = device_type_name(ggml_backend_dev_type(dev));
        size_t free_mem = 0, total_mem = 0;
        ggml_backend_dev_memory(dev, &free_mem, &total_mem);
        d.memory_total = total_mem;
        out.push_back(d);
    }
    return out;
}

}  // namespace autoglm
