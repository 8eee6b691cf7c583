// ref: ggml/src/ggml-backend-reg.cpp (ggml_backend_load_best: score each libggml-cpu-*.so, load the
//      best). We choose the CPU module ourselves so that we know its name, can honour an explicit
//      choice with a clear error, and never register two CPU backends.
#include "backend_loader.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "backend.h"
#include "error.h"
#include "ggml-backend.h"

#if defined(GGML_BACKEND_DL) && !defined(_WIN32)
#    define AUTOGLM_DL_BACKENDS 1
#    include <dirent.h>
#    include <dlfcn.h>
#endif

namespace autoglm {

namespace {

std::mutex g_mutex;
bool g_loaded = false;
std::string g_variant = "built-in";

#if AUTOGLM_DL_BACKENDS

constexpr const char * cpu_prefix = "libggml-cpu-";

bool ends_with(const std::string & s, const std::string & suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string module_dir() {
    if (const char * env = std::getenv("AUTOGLM_BACKEND_DIR"); env && *env) return env;
    Dl_info info{};
    if (dladdr((void *) &module_dir, &info) && info.dli_fname) {
        std::string path = info.dli_fname;
        const size_t slash = path.rfind('/');
        return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
    }
    return ".";
}

std::vector<std::string> list_dir(const std::string & dir) {
    std::vector<std::string> out;
    if (DIR * d = opendir(dir.c_str())) {
        while (dirent * e = readdir(d)) out.emplace_back(e->d_name);
        closedir(d);
    }
    std::sort(out.begin(), out.end());
    return out;
}

// The module's own verdict, without registering it. Loading a module compiled for a newer ISA is
// safe: ggml compiles its feature check (ggml_backend_score) without the variant's flags.
int score_of(const std::string & path) {
    void * h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) return -1;
    using score_fn = int (*)();
    auto fn = (score_fn) dlsym(h, "ggml_backend_score");
    const int s = fn ? fn() : -1;
    dlclose(h);
    return s;
}

std::vector<cpu_variant_info> scan_cpu_variants(const std::string & dir) {
    std::vector<cpu_variant_info> out;
    for (const std::string & f : list_dir(dir)) {
        if (f.rfind(cpu_prefix, 0) != 0 || !ends_with(f, ".so")) continue;
        cpu_variant_info v;
        v.name = f.substr(std::strlen(cpu_prefix), f.size() - std::strlen(cpu_prefix) - 3);
        v.path = dir + "/" + f;
        v.score = score_of(v.path);
        out.push_back(v);
    }
    std::stable_sort(out.begin(), out.end(), [](const auto & a, const auto & b) { return a.score > b.score; });
    return out;
}

std::string names_of(const std::vector<cpu_variant_info> & vs, bool runnable) {
    std::string s;
    for (const auto & v : vs) {
        if ((v.score > 0) != runnable) continue;
        s += (s.empty() ? "" : ", ") + v.name;
    }
    return s.empty() ? "none" : s;
}

void load_locked() {
    const std::string dir = module_dir();
    const std::vector<cpu_variant_info> variants = scan_cpu_variants(dir);
    if (variants.empty()) {
        throw error("no ggml CPU backend module (" + std::string(cpu_prefix) + "*.so) in " + dir +
                    "; reinstall the package, or point AUTOGLM_BACKEND_DIR at the directory that holds them");
    }
    const cpu_variant_info * chosen = nullptr;
    if (const char * want = std::getenv("AUTOGLM_CPU_VARIANT"); want && *want) {
        for (const auto & v : variants) {
            if (v.name == want) chosen = &v;
        }
        if (!chosen) {
            throw invalid_argument(std::string("AUTOGLM_CPU_VARIANT=") + want + ": no such CPU variant in " + dir +
                                   "; this machine can run: " + names_of(variants, true) + " (unset it to use the best)");
        }
        if (chosen->score <= 0) {
            throw invalid_argument(std::string("AUTOGLM_CPU_VARIANT=") + want +
                                   ": this CPU or its operating system lacks instructions that variant needs; this "
                                   "machine can run: " +
                                   names_of(variants, true) + " (unset it to use the best)");
        }
    } else {
        chosen = &variants.front();
        if (chosen->score <= 0) {
            throw error("none of the ggml CPU backend modules in " + dir + " can run on this CPU (" + names_of(variants, false) +
                        ")");
        }
    }
    if (!ggml_backend_load(chosen->path.c_str())) {
        throw error("cannot load the ggml CPU backend " + chosen->path + " (ggml's log above says why)");
    }
    g_variant = chosen->name;

    // Every other backend module next to it (libggml-cuda.so, libggml-vulkan.so, ...): a GPU that its
    // driver cannot open is simply not registered, as in ggml_backend_load_all.
    for (const std::string & f : list_dir(dir)) {
        if (f.rfind("libggml-", 0) != 0 || f.rfind(cpu_prefix, 0) == 0 || !ends_with(f, ".so")) continue;
        if (f.rfind("libggml-base", 0) == 0) continue;
        if (score_of(dir + "/" + f) == 0) continue;
        ggml_backend_load((dir + "/" + f).c_str());
    }
}

#endif  // AUTOGLM_DL_BACKENDS

}  // namespace

void load_backends() {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_loaded) return;
    use_default_ggml_logger();  // before ggml's loader reports each module it loads
#if AUTOGLM_DL_BACKENDS
    load_locked();
#elif defined(GGML_BACKEND_DL)
    ggml_backend_load_all();
    g_variant = "best (ggml_backend_load_all)";
#endif
    g_loaded = true;
}

bool has_cpu_variants() {
#if AUTOGLM_DL_BACKENDS
    return true;
#else
    return false;
#endif
}

std::string backend_dir() {
#if AUTOGLM_DL_BACKENDS
    return module_dir();
#else
    return "";
#endif
}

std::vector<cpu_variant_info> cpu_variants() {
#if AUTOGLM_DL_BACKENDS
    return scan_cpu_variants(module_dir());
#else
    return {};
#endif
}

std::string cpu_variant() {
    load_backends();
    std::lock_guard<std::mutex> lock(g_mutex);
    return g_variant;
}

std::vector<std::string> cpu_features() {
    load_backends();
    std::vector<std::string> out;
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) return out;
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    auto get = (ggml_backend_get_features_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features");
    if (!get) return out;
    for (ggml_backend_feature * f = get(reg); f && f->name; ++f) {
        const std::string value = f->value ? f->value : "";
        out.push_back(value == "1" ? std::string(f->name) : std::string(f->name) + "=" + value);
    }
    return out;
}

}  // namespace autoglm
