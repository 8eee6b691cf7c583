#include "gemm.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "error.h"
#include "gemm_panel.h"
#include "gemm_q4_0.h"
#include "gemm_q4_k.h"
#include "gemm_q5_0.h"
#include "gemm_q8_0.h"

namespace autoglm {

namespace {

const std::vector<const gemm::kernel *> & kernels() {
    static const std::vector<const gemm::kernel *> all = {&gemm_q4_0_kernel(), &gemm_q4_k_kernel(), &gemm_q5_0_kernel(),
                                                          &gemm_q8_0_kernel()};
    return all;
}

const gemm::kernel * kernel_for(ggml_type type) {
    for (const gemm::kernel * k : kernels()) {
        if (k->type == type) return k;
    }
    return nullptr;
}

void quantize_op(ggml_tensor * dst, int ith, int nth, void * user) {
    const auto * kern = static_cast<const gemm::kernel *>(user);
    const ggml_tensor * x = dst->src[0];
    const int64_t k = x->ne[0], m = x->ne[1];
    kern->quantize((const float *) x->data, x->nb[1], k, m * ith / nth, m * (ith + 1) / nth, (uint8_t *) dst->data);
}

void gemm_op(ggml_tensor * dst, int ith, int nth, void * user) {
    const auto * w = static_cast<const ggml_tensor *>(user);
    const gemm::kernel * kern = kernel_for(w->type);
    const ggml_tensor * xq = dst->src[0];
    const int64_t n = w->ne[1], n_panels = (n + 7) / 8;
    kern->panels((const uint8_t *) w->data, gemm::is_repacked(w), n, w->ne[0], (const uint8_t *) xq->data, xq->ne[1],
                 (float *) dst->data, (int64_t) (dst->nb[1] / sizeof(float)), n_panels * ith / nth, n_panels * (ith + 1) / nth);
}

}  // namespace

bool gemm_available() {
#if AUTOGLM_GEMM_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
    return false;
#endif
}

bool gemm_applies(const ggml_tensor * w, int64_t n_rows) {
    const gemm::kernel * kern = kernel_for(w->type);
    if (!kern || !kern->panels || w->ne[0] % kern->block != 0 || (w->ne[0] < kern->min_k && !gemm::forced_by_env()) ||
        !gemm::weight_on_cpu(w, n_rows)) {
        return false;
    }
    return (kern->reads_repacked || !gemm::is_repacked(w)) && gemm_available();
}

ggml_tensor * gemm_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
    const gemm::kernel * kern = kernel_for(w->type);
    if (!kern || !kern->panels || x->type != GGML_TYPE_F32 || x->nb[0] != sizeof(float) || x->ne[0] != w->ne[0] ||
        x->ne[2] != 1 || x->ne[3] != 1) {
        return ggml_mul_mat(ctx, w, x);
    }
    ggml_tensor * args[1] = {x};
    ggml_tensor * xq = ggml_custom_4d(ctx, GGML_TYPE_I8, (int64_t) kern->row_bytes(w->ne[0]), x->ne[1], 1, 1, args, 1,
                                      quantize_op, GGML_N_TASKS_MAX, const_cast<gemm::kernel *>(kern));
    ggml_set_name(xq, kern->quantize_name);
    ggml_tensor * args2[1] = {xq};
    ggml_tensor * out = ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], 1, 1, args2, 1, gemm_op, GGML_N_TASKS_MAX, w);
    ggml_set_name(out, kern->name);
    return out;
}

void gemm_run(ggml_type type, const uint8_t * w, int64_t n, int64_t k, const float * a, int64_t m, float * c, int n_threads) {
    const gemm::kernel * kern = kernel_for(type);
    if (!kern) throw invalid_argument(std::string("gemm: no kernel for ") + ggml_type_name(type) + " weights");
    if (k % kern->block != 0 || n <= 0 || m <= 0) {
        throw invalid_argument("gemm " + std::string(ggml_type_name(type)) + ": K must be a multiple of " +
                               std::to_string(kern->block) + ", M and N positive");
    }
    if (!gemm_available() || !kern->panels) throw error("gemm: this CPU lacks AVX2/FMA/F16C");
    const int nt = std::max(1, n_threads);
    std::vector<uint8_t> q((size_t) m * kern->row_bytes(k));
    std::vector<std::thread> pool;
    for (int t = 0; t < nt; ++t) {
        pool.emplace_back([&, t] { kern->quantize(a, (size_t) k * sizeof(float), k, m * t / nt, m * (t + 1) / nt, q.data()); });
    }
    for (auto & th : pool) th.join();
    pool.clear();
    const int64_t n_panels = (n + 7) / 8;
    for (int t = 0; t < nt; ++t) {
        pool.emplace_back(
            [&, t] { kern->panels(w, false, n, k, q.data(), m, c, n, n_panels * t / nt, n_panels * (t + 1) / nt); });
    }
    for (auto & th : pool) th.join();
}

bool gemm_node_info(const ggml_tensor * t, const char ** family, double * ops) {
    if (t->op != GGML_OP_CUSTOM) return false;
    for (const gemm::kernel * kern : kernels()) {
        if (std::strcmp(ggml_get_name(t), kern->name) == 0) {
            // dst [N, M]; its source holds M quantized rows of row_bytes(K)
            const double k = (double) (t->src[0]->ne[0] / (int64_t) kern->act_block_bytes) * kern->block;
            *family = kern->family;
            *ops = 2.0 * k * (double) t->ne[0] * (double) t->ne[1];
            return true;
        }
        if (std::strcmp(ggml_get_name(t), kern->quantize_name) == 0) {
            *family = kern->quantize_family;
            *ops = 0.0;
            return true;
        }
    }
    return false;
}

}  // namespace autoglm
