#include "op_profile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cpu_attention.h"
#include "cpu_peak.h"
#include "gemm.h"
#include "gemv_block32.h"
#include "gemv_block32_x16.h"
#include "gemv_q4_0.h"
#include "gemv_q4_k.h"
#include "gemv_q5_k.h"
#include "gemv_q6_k.h"
#include "ggml.h"
#include "read_bandwidth.h"

namespace autoglm {

bool op_profile::enabled() {
    static const bool on = [] {
        const char * v = std::getenv("AUTOGLM_PROFILE");
        return v && *v && *v != '0';
    }();
    return on;
}

bool op_profile::by_shape() {
    static const bool on = [] {
        const char * v = std::getenv("AUTOGLM_PROFILE");
        return v && std::string(v) == "shapes";
    }();
    return on;
}

// " K x N" of a matrix product's weight, for AUTOGLM_PROFILE=shapes: whether a kernel pays can
// depend on K (a kernel's break-even, gemm_panel.h kernel::min_k), which one row per family hides.
static std::string weight_shape(const ggml_tensor * t, const op_profile::row & r) {
    int64_t k = 0, n = 0;
    if (t->op == GGML_OP_MUL_MAT) {
        k = t->src[0]->ne[0], n = t->src[0]->ne[1];
    } else if (t->op == GGML_OP_CUSTOM && r.ops > 0 && !r.peak.empty() && t->ne[0] > 0 && t->ne[1] > 0) {
        // our prompt GEMMs: dst [N, M] and 2*K*N*M operations
        n = t->ne[0];
        k = (int64_t) (r.ops / (2.0 * (double) t->ne[0] * (double) t->ne[1]) + 0.5);
    }
    return k > 0 ? " " + std::to_string(k) + "x" + std::to_string(n) : std::string();
}

void op_profile::attach(int n_threads) {
    started_ = false;
    n_threads_ = n_threads > 0 ? n_threads : 1;
}

static bool is_quantized(ggml_type t) { return ggml_is_quantized(t); }

// The work of our attention kernels (q.k^T and p.v) for q [hd, n_head, n] over n_kv keys: with a
// (causal) mask they skip the masked tail, so count the keys each query sees when the last sees all n_kv.
static double attention_ops(const ggml_tensor * q, double n_kv, bool causal) {
    const double hd = (double) q->ne[0], heads = (double) q->ne[1], n = (double) q->ne[2];
    const double pairs = causal ? n * (n_kv - n + 1) + n * (n - 1) / 2 : n * n_kv;
    return 4.0 * hd * heads * pairs;
}

op_profile::row op_profile::classify(const ggml_tensor * t) {
    row r;
    r.family = ggml_op_desc(t);
    if (t->buffer) {
        ggml_backend_dev_t dev = ggml_backend_buft_get_device(ggml_backend_buffer_get_type(t->buffer));
        r.on_cpu = !dev || ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU;
    }
    if (t->op == GGML_OP_MUL_MAT) {
        // src0 [K, N, ...] (the weight), src1 [K, M, ...]: K*N*M multiply-adds per batch entry.
        const ggml_tensor * w = t->src[0];
        const ggml_tensor * x = t->src[1];
        r.family += std::string(" ") + ggml_type_name(w->type);
        if (w->buffer) {
            const std::string buf = ggml_backend_buft_name(ggml_backend_buffer_get_type(w->buffer));
            if (buf != "CPU" && buf.find("Mapped") == std::string::npos) r.family += " " + buf;
        }
        r.family += x->ne[1] == 1 ? " (vector)" : "";
        r.ops = 2.0 * (double) w->ne[0] * (double) w->ne[1] * (double) x->ne[1] * (double) x->ne[2] * (double) x->ne[3];
        if (is_quantized(w->type)) {
            r.peak = r.family.find("AMX") != std::string::npos ? "amx_int8" : "int8";
        } else {
            r.peak = w->type == GGML_TYPE_BF16 ? "bf16" : "f32";
        }
        if (x->ne[1] == 1) {  // a matrix-vector product is bound by memory, not arithmetic
            r.peak.clear();
            r.bytes = (double) ggml_nbytes(w);
        }
    } else if (t->op == GGML_OP_FLASH_ATTN_EXT) {
        // q [D, n_q, H], k [D, n_kv, H_kv], v [Dv, n_kv, H_kv]: q.k^T and p.v per head
        const ggml_tensor * q = t->src[0];
        const ggml_tensor * k = t->src[1];
        const ggml_tensor * v = t->src[2];
        r.family += std::string(" ") + ggml_type_name(k->type);
        r.ops =
            2.0 * (double) q->ne[1] * (double) k->ne[1] * (double) q->ne[2] * (double) q->ne[3] * (double) (q->ne[0] + v->ne[0]);
        r.peak = "f32";
    } else if (t->op == GGML_OP_CUSTOM && std::string(ggml_get_name(t)) == cpu_attention_name) {
        // our attention kernel: q [hd, n_head, n], V panels [PW, n_kv, ...]
        r.family = "ATTENTION (ours)";
        r.ops = attention_ops(t->src[0], (double) t->src[2]->ne[1], t->src[3] != nullptr);
        r.peak = "f32";
    } else if (t->op == GGML_OP_CUSTOM && std::string(ggml_get_name(t)) == cpu_attention_bf16_name) {
        // q [hd, n_head, n], K packed [n_kv, ...]
        r.family = "ATTENTION bf16 (ours)";
        r.ops = attention_ops(t->src[0], (double) t->src[1]->ne[0], t->src[3] != nullptr);
        r.peak = cpu_attention_bf16_tiles() ? "amx_bf16" : "bf16";
    } else if (const char * family = nullptr;
               gemv_q4_0_node_info(t, &family, &r.ops, &r.bytes) || gemv_q4_k_node_info(t, &family, &r.ops, &r.bytes) ||
               gemv_q6_k_node_info(t, &family, &r.ops, &r.bytes) || gemv_q5_k_node_info(t, &family, &r.ops, &r.bytes) ||
               gemv_block32_node_info(t, &family, &r.ops, &r.bytes) || x16_gemv_node_info(t, &family, &r.ops, &r.bytes)) {
        r.family = family;
    } else if (const char * family = nullptr, *peak = nullptr; gemm_node_info(t, &family, &r.ops, &peak)) {
        r.family = family;
        if (r.ops > 0) r.peak = peak;
    }
    return r;
}

bool op_profile::eval_cb(ggml_tensor * t, bool ask, void * user) {
    auto * self = static_cast<op_profile *>(user);
    const auto now = std::chrono::steady_clock::now();
    if (ask) {
        // The first question comes before anything ran: start the clock there.
        if (!self->started_) {
            self->started_ = true;
            self->last_ = now;
        }
        return true;  // stop after every node
    }
    // Called once the nodes up to t have run: everything since the last stop belongs to t's family.
    row c = classify(t);
    if (by_shape()) c.family += weight_shape(t, c);
    row & r = self->by_family_[c.family];
    if (r.n == 0) r = c, r.ops = 0, r.bytes = 0;
    r.ms += std::chrono::duration<double, std::milli>(now - self->last_).count();
    r.n += 1;
    r.ops += c.ops;
    r.bytes += c.bytes;
    self->last_ = std::chrono::steady_clock::now();
    return true;
}

void op_profile::report(const char * what) {
    if (!enabled() || by_family_.empty()) return;
    std::vector<row> rows;
    for (const auto & kv : by_family_) rows.push_back(kv.second);
    std::sort(rows.begin(), rows.end(), [](const row & a, const row & b) { return a.ms > b.ms; });
    double total = 0;
    for (const auto & r : rows) total += r.ms;
    const cpu_peak_info peak = cpu_peak(n_threads_);
    std::fprintf(stderr,
                 "autoglm profile [%s]: %.1f ms in %zu kernel families; CPU peak on %d threads at %.2f GHz "
                 "(measured): f32 %.0f GFLOP/s (%s), bf16 %.0f (%s), int8 %.0f GOP/s (%s)%s\n",
                 what, total, rows.size(), peak.threads, peak.clock_ghz, peak.f32_gops(), peak.f32_isa.c_str(), peak.bf16_gops(),
                 peak.bf16_isa.c_str(), peak.int8_gops(), peak.int8_isa.c_str(),
                 peak.amx_int8_per_cycle > 0
                     ? (", AMX int8 " + std::to_string((int) peak.amx_int8_gops()) + " (" + peak.amx_int8_isa + "), AMX bf16 " +
                        std::to_string((int) peak.amx_bf16_gops()) + " (" + peak.amx_bf16_isa + ")")
                           .c_str()
                     : "");
    // The bandwidth-bound rows (the decode GEMVs) against what the cores can read, measured now: on a
    // shared machine it moves with the neighbours (read_bandwidth.h; ~0.2 s)
    const bool reads = std::any_of(rows.begin(), rows.end(), [](const row & r) { return r.bytes > 0 && r.on_cpu; });
    double read_bw = 0;
    try {
        if (reads) read_bw = read_bandwidth_gbs(peak.threads);
    } catch (const std::exception &) {  // no memory for the probe: the rows go without the share
    }
    if (read_bw > 0) std::fprintf(stderr, "  (read bandwidth on %d threads, measured: %.1f GB/s)\n", peak.threads, read_bw);
    for (const auto & r : rows) {
        std::fprintf(stderr, "  %-34s %10.1f ms %5.1f%%  x%-6d", r.family.c_str(), r.ms, 100.0 * r.ms / total, r.n);
        if (r.ops > 0 && r.ms > 0) {
            const double gops = r.ops / (r.ms * 1e6);
            std::fprintf(stderr, " %8.1f GOP/s", gops);
            double p = 0;
            if (r.on_cpu) {
                if (r.peak == "f32") p = peak.f32_gops();
                if (r.peak == "bf16") p = peak.bf16_gops();
                if (r.peak == "int8") p = peak.int8_gops();
                if (r.peak == "amx_int8") p = peak.amx_int8_gops();
                if (r.peak == "amx_bf16") p = peak.amx_bf16_gops();
            }
            if (p > 0) std::fprintf(stderr, " %5.1f%% of %s peak", 100.0 * gops / p, r.peak.c_str());
        }
        if (r.bytes > 0 && r.ms > 0) {
            const double gbs = r.bytes / (r.ms * 1e6);
            std::fprintf(stderr, " %6.1f GB/s of weights", gbs);
            if (r.on_cpu && read_bw > 0) std::fprintf(stderr, " %5.1f%% of read bw", 100.0 * gbs / read_bw);
        }
        std::fputc('\n', stderr);
    }
    by_family_.clear();
}

}  // namespace autoglm
