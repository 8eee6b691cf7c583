#include "backend.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <thread>

#include "backend_loader.h"
#include "cpu_amx.h"
#include "error.h"
#include "ggml_ptr.h"

namespace autoglm {

int default_thread_count() {
    // Count distinct thread-sibling sets: one per physical core. Hyper-threads share a core's SIMD
    // units, and matmul-bound inference gets slower, not faster, when it uses both.
    std::set<std::string> cores;
    for (unsigned cpu = 0; cpu < 4096; ++cpu) {
        std::ifstream f("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list");
        if (!f) break;
        std::string s;
        std::getline(f, s);
        cores.insert(s);
    }
    if (!cores.empty()) return (int) cores.size();
    const unsigned hw = std::thread::hardware_concurrency();
    return hw > 0 ? (int) hw : 1;
}

std::string device_of(const ggml_tensor * t) {
    if (!t || !t->buffer) return "none";
    ggml_backend_dev_t dev = ggml_backend_buft_get_device(ggml_backend_buffer_get_type(t->buffer));
    if (dev) return ggml_backend_dev_name(dev);
    // ggml's buffers over existing host memory (weights read in place from the mapped file) have no device
    return ggml_backend_buffer_is_host(t->buffer) ? "CPU" : ggml_backend_buffer_name(t->buffer);
}

// ggml reports through a process-wide logger that by default prints everything (including a
// debug line per repacked tensor). Keep warnings and errors, drop the chatter.
static void ggml_log_filter(enum ggml_log_level level, const char * text, void *) {
    static enum ggml_log_level last = GGML_LOG_LEVEL_NONE;
    if (level == GGML_LOG_LEVEL_CONT) level = last;  // continuation of the previous message
    last = level;
    if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

static std::atomic<bool> g_logger_configured{false};

void set_ggml_logger(ggml_log_callback cb) {
    g_logger_configured = true;
    ggml_log_set(cb ? cb : ggml_log_filter, nullptr);
}

void use_default_ggml_logger() {
    if (!g_logger_configured.exchange(true)) ggml_log_set(ggml_log_filter, nullptr);
}

// Linux hands out AMX tile state only to processes that ask for it; until then the first tile
// instruction is SIGILL. ggml asks only when its AMX buffer type is created, so a native build on a
// Sapphire Rapids (or later) Xeon could reach tile code without it. Ask once, before any kernel runs
// (cpu_amx.h; our own AMX kernels ask again there, which is free).
backend_set::backend_set(int n_threads, bool want_gpu) {
    request_amx_permission();
    use_default_ggml_logger();

    load_backends();
    cpu_dev_ = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!cpu_dev_) throw error("ggml has no CPU backend");
    cpu_ = ggml_backend_dev_init(cpu_dev_, nullptr);
    if (!cpu_) throw error("cannot initialize the ggml CPU backend");
    set_n_threads(n_threads > 0 ? n_threads : default_thread_count());

    auto reg = ggml_backend_dev_backend_reg(cpu_dev_);
    auto get_extra =
        (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    if (get_extra) {
        for (ggml_backend_buffer_type_t * b = get_extra(cpu_dev_); b && *b; ++b) {
            // Not ggml's AMX buffer type (the sapphirerapids variant's): built with GCC 12 its kernels
            // SIGILL at the first tile load. ggml fills its tile configuration through GCC's
            // _tile_loadconfig, whose asm names only 8 of the 64 bytes as read, so the stores of the
            // rows and widths are dropped (seen in the shipped module's code: ldtilecfg of zeros with
            // palette 1). Our own AMX kernels (gemm_block32_amx.h) multiply those weights instead,
            // from ggml's repacked or the file's layout.
            if (std::strcmp(ggml_backend_buft_name(*b), "AMX") == 0) continue;
            cpu_extra_.push_back(*b);
        }
    }

    if (want_gpu) {
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t d = ggml_backend_dev_get(i);
            const auto t = ggml_backend_dev_type(d);
            if (t == GGML_BACKEND_DEVICE_TYPE_GPU || t == GGML_BACKEND_DEVICE_TYPE_IGPU) {
                gpu_ = ggml_backend_dev_init(d, nullptr);
                if (!gpu_) throw error(std::string("cannot initialize GPU device ") + ggml_backend_dev_name(d));
                gpu_dev_ = d;
                break;
            }
        }
    }
}

backend_set::~backend_set() {
    if (gpu_) ggml_backend_free(gpu_);
    if (cpu_) ggml_backend_free(cpu_);
}

std::vector<ggml_backend_t> backend_set::all() const {
    std::vector<ggml_backend_t> out;
    if (gpu_) out.push_back(gpu_);
    out.push_back(cpu_);
    return out;
}

void backend_set::set_n_threads(int n) {
    // Far more threads than any machine has cores makes OpenMP abort the process (libgomp calls exit);
    // refuse it here with a message instead.
    constexpr int max_threads = 1024;
    if (n > max_threads) {
        throw invalid_argument("n_threads = " + std::to_string(n) + " is more than " + std::to_string(max_threads) +
                               "; use at most the number of CPU cores (" + std::to_string(default_thread_count()) + ")");
    }
    n_threads_ = n > 0 ? n : 1;
    // Through the registry: with CPU variants the CPU backend lives in a module loaded at run time.
    auto set_threads = (ggml_backend_set_n_threads_t) ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(cpu_dev_),
                                                                                        "ggml_backend_set_n_threads");
    if (set_threads) set_threads(cpu_, n_threads_);
}

std::string backend_set::describe() const {
    std::string s = "CPU (" + std::to_string(n_threads_) + " threads)";
    if (gpu_dev_) s += std::string(" + ") + ggml_backend_dev_name(gpu_dev_) + " (" + ggml_backend_dev_description(gpu_dev_) + ")";
    return s;
}

ggml_backend_buffer_type_t backend_set::cpu_weight_buft(ggml_tensor * op, ggml_tensor * weight) const {
    for (ggml_backend_buffer_type_t buft : cpu_extra_) {
        // An extra buffer type answers "can op run with its src0 in me" through supports_op, which
        // looks at the weight's buffer: give the weight a zero-size buffer of that type to ask.
        ggml_backend_buffer_t probe = ggml_backend_buft_alloc_buffer(buft, 0);
        ggml_backend_buffer_t saved = weight->buffer;
        weight->buffer = probe;
        const bool ok = ggml_backend_dev_supports_op(cpu_dev_, op);
        weight->buffer = saved;
        ggml_backend_buffer_free(probe);
        if (ok) return buft;
    }
    return ggml_backend_dev_buffer_type(cpu_dev_);
}

ggml_backend_buffer_type_t backend_set::cpu_matmul_buft(ggml_tensor * weight) const {
    ggml_init_params ip{4 * ggml_tensor_overhead(), nullptr, true};
    ggml_ctx_ptr probe(ggml_init(ip));
    ggml_tensor * x = ggml_new_tensor_2d(probe.get(), GGML_TYPE_F32, weight->ne[0], 8);
    return cpu_weight_buft(ggml_mul_mat(probe.get(), weight, x), weight);
}

ggml_backend_buffer_type_t backend_set::weight_buft(ggml_backend_t where, ggml_tensor * file_tensor, weight_use use,
                                                    bool repack) const {
    if (gpu_ && where == gpu_) return ggml_backend_dev_buffer_type(gpu_dev_);
    if (file_tensor && use == weight_use::matmul && repack) return cpu_matmul_buft(file_tensor);
    return ggml_backend_dev_buffer_type(cpu_dev_);
}

}  // namespace autoglm
