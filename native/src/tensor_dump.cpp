#include "tensor_dump.h"

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "ggml-backend.h"

namespace autoglm {

namespace {

const char * dump_root() {
    static const char * root = [] {
        const char * v = std::getenv("AUTOGLM_DUMP_TENSORS");
        return v && *v ? v : nullptr;
    }();
    return root;
}

// Our names are "name" or "name-<layer>" (graph_util.h named()); ggml decorates derived tensors with
// spaces and parentheses ("x (view)", "x (reshaped)"), which are not ours to dump.
bool is_our_name(const char * s) {
    if (!*s) return false;
    for (const char * c = s; *c; ++c) {
        if (!(std::isalnum((unsigned char) *c) || *c == '_' || *c == '-')) return false;
    }
    return true;
}

// NumPy's format, version 1.0: magic, version, header length, a Python dict literal padded with
// spaces to a multiple of 64 bytes (ending in a newline), then the raw little-endian data.
void write_npy(const std::string & path, const std::vector<int64_t> & shape, const std::vector<float> & data) {
    std::string dims;
    for (int64_t d : shape) dims += std::to_string(d) + ", ";
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
    const size_t preamble = 10;  // magic (6) + version (2) + header length (2)
    header.append(64 - (preamble + header.size() + 1) % 64, ' ');
    header += '\n';
    std::ofstream out(path, std::ios::binary);
    const uint16_t len = (uint16_t) header.size();
    out.write("\x93NUMPY\x01\x00", 8);
    const unsigned char len_le[2] = {(unsigned char) (len & 0xff), (unsigned char) (len >> 8)};
    out.write(reinterpret_cast<const char *>(len_le), 2);
    out.write(header.data(), (std::streamsize) header.size());
    out.write(reinterpret_cast<const char *>(data.data()), (std::streamsize) (data.size() * sizeof(float)));
    if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace

bool tensor_dump::enabled() { return dump_root() != nullptr; }

void tensor_dump::begin(const char * what) noexcept {
    static std::atomic<int> counter{0};
    dir_.clear();
    written_.clear();
    if (!enabled()) return;
    char sub[64];
    std::snprintf(sub, sizeof sub, "%04d-%s", counter++, what);
    try {
        const std::filesystem::path dir = std::filesystem::path(dump_root()) / sub;
        std::filesystem::create_directories(dir);
        dir_ = dir.string();
    } catch (const std::exception & e) {
        static std::atomic<bool> warned{false};
        if (!warned.exchange(true)) std::fprintf(stderr, "autoglm: AUTOGLM_DUMP_TENSORS: %s; nothing is dumped\n", e.what());
    }
}

bool tensor_dump::wants(const ggml_tensor * t) {
    return (t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_F16) && ggml_is_contiguous(t) && is_our_name(t->name);
}

bool tensor_dump::eval_cb(ggml_tensor * t, bool ask, void * user) {
    auto * self = static_cast<tensor_dump *>(user);
    if (self->dir_.empty() || !wants(t)) return false;
    if (!ask) self->write(t);
    return true;
}

void tensor_dump::write(const ggml_tensor * t) noexcept {
    try {
        const int64_t n = ggml_nelements(t);
        std::vector<float> data((size_t) n);
        if (t->type == GGML_TYPE_F32) {
            ggml_backend_tensor_get(t, data.data(), 0, (size_t) n * sizeof(float));
        } else {
            std::vector<ggml_fp16_t> half((size_t) n);
            ggml_backend_tensor_get(t, half.data(), 0, (size_t) n * sizeof(ggml_fp16_t));
            ggml_fp16_to_fp32_row(half.data(), data.data(), n);
        }
        std::vector<int64_t> shape;
        for (int d = ggml_n_dims(t) - 1; d >= 0; --d) shape.push_back(t->ne[d]);
        // A name met twice in one graph keeps both: the second is "name.2".
        std::string name = t->name;
        for (int k = 2; !written_.insert(name).second; ++k) name = std::string(t->name) + "." + std::to_string(k);
        write_npy((std::filesystem::path(dir_) / (name + ".npy")).string(), shape, data);
    } catch (const std::exception & e) {
        std::fprintf(stderr, "autoglm: AUTOGLM_DUMP_TENSORS: %s; dumping stops for this computation\n", e.what());
        dir_.clear();
    }
}

}  // namespace autoglm
