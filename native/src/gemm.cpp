#include "gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "block32_x16.h"
#include "cpu_amx.h"
#include "error.h"
#include "gemm_affine32.h"
#include "gemm_bf16_rows.h"
#include "gemm_float.h"
#include "gemm_panel.h"
#include "gemm_q4_0.h"
#include "gemm_q4_k.h"
#include "gemm_q5_0.h"
#include "gemm_q5_k.h"
#include "gemm_q6_k.h"
#include "gemm_q8_0.h"

namespace autoglm {

namespace {

const std::vector<const gemm::kernel *> & kernels() {
    static const std::vector<const gemm::kernel *> all = {&gemm_q4_0_kernel(), &gemm_q4_k_kernel(), &gemm_q5_0_kernel(),
                                                          &gemm_q5_k_kernel(), &gemm_q8_0_kernel(), &gemm_q5_1_kernel(),
                                                          &gemm_q4_1_kernel(), &gemm_q6_k_kernel()};
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

constexpr gemm_isa all_isas[] = {gemm_isa::avx2, gemm_isa::avx_vnni, gemm_isa::avx512_vnni, gemm_isa::avx512_bf16,
                                 gemm_isa::amx};  // in order

bool cpu_has(gemm_isa isa) {
#if AUTOGLM_GEMM_X86
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    switch (isa) {
        case gemm_isa::avx2: return avx2;
        case gemm_isa::avx_vnni: return avx2 && cpu_has_avx_vnni();
        // libgcc sets the AVX-512 bits only where the OS saves the 512-bit state (XCR0)
        case gemm_isa::avx512_vnni:
            return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
        case gemm_isa::avx512_bf16: return cpu_has(gemm_isa::avx512_vnni) && __builtin_cpu_supports("avx512bf16");
        case gemm_isa::amx: return cpu_has(gemm_isa::avx512_bf16) && amx_int8_usable() && amx_bf16_usable();
    }
#endif
    (void) isa;
    return false;
}

// The variant of a kernel for an ISA (falling back to AVX2 where the kernel has no other), and how
// many 8-column panels it works on at a time.
struct variant {
    gemm::kernel::panels_fn panels;
    int64_t panels_per_step;
    int64_t min_k;  // the graph uses it from this K on
};
variant variant_for(const gemm::kernel & kern, gemm_isa isa) {
    // AVX-512 VNNI has no break-even: measured 3-5x ggml's kernels at every K of the 9B shape, Q8_0
    // included (bench/README.md)
    if (isa == gemm_isa::amx && kern.panels_amx) return {kern.panels_amx, 4, 0};
    if (gemm_isa_has_avx512(isa) && kern.panels_avx512_vnni) return {kern.panels_avx512_vnni, 2, 0};
    // groups of 4 panels, as the AVX2 kernel's; the break-even is AVX2's until measured against ggml's
    // AVX-VNNI build on such a core
    if (isa == gemm_isa::avx_vnni && kern.panels_avx_vnni) return {kern.panels_avx_vnni, 4, kern.min_k};
    return {kern.panels, 1, kern.min_k};
}

// Thread ith's share of n_panels panels, in whole steps of the variant.
void thread_panels(int64_t n_panels, int64_t per_step, int ith, int nth, int64_t & p0, int64_t & p1) {
    const int64_t steps = (n_panels + per_step - 1) / per_step;
    p0 = std::min(n_panels, steps * ith / nth * per_step);
    p1 = std::min(n_panels, steps * (ith + 1) / nth * per_step);
}

void gemm_op(ggml_tensor * dst, int ith, int nth, void * user) {
    const auto * w = static_cast<const ggml_tensor *>(user);
    const variant v = variant_for(*kernel_for(w->type), gemm_best_isa());
    const ggml_tensor * xq = dst->src[0];
    const int64_t n = w->ne[1];
    int64_t p0, p1;
    thread_panels((n + 7) / 8, v.panels_per_step, ith, nth, p0, p1);
    if (p0 >= p1) return;
    // the flag tells a kernel its weights' layout: ggml's repacked one or ours (block32_x16.h)
    v.panels((const uint8_t *) w->data, gemm::is_repacked(w) || x16_marked(w), n, w->ne[0], (const uint8_t *) xq->data, xq->ne[1],
             (float *) dst->data, (int64_t) (dst->nb[1] / sizeof(float)), p0, p1);
}

// The BF16 tile path's two ops: the rows of x rounded to BF16 pairs in tile order (gemm_bf16_rows.h),
// then the panels. The packed rows start at the first 64-byte boundary of the op's data (ggml aligns a
// tensor to 32 bytes; a tile row must not split a cache line).
constexpr int64_t bf16_tile_panels = 4;  // 8-column panels per tile pass (32 columns): a thread's unit

uint32_t * bf16_rows_at(const ggml_tensor * t) { return (uint32_t *) (((uintptr_t) t->data + 63) & ~(uintptr_t) 63); }

void pack_bf16_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0];
    const int64_t k = x->ne[0], m = x->ne[1];
    pack_bf16_tile_rows((const float *) x->data, x->nb[1], k, m, m * ith / nth, m * (ith + 1) / nth, bf16_rows_at(dst));
}

void gemm_bf16_op(ggml_tensor * dst, int ith, int nth, void * user) {
    const auto * w = static_cast<const ggml_tensor *>(user);
    const gemm::kernel * kern = kernel_for(w->type);
    const int64_t n = w->ne[1];
    int64_t p0, p1;
    thread_panels((n + 7) / 8, bf16_tile_panels, ith, nth, p0, p1);
    if (p0 >= p1) return;
    kern->panels_amx_bf16((const uint8_t *) w->data, gemm::is_repacked(w) || x16_marked(w), n, w->ne[0],
                          (const uint8_t *) bf16_rows_at(dst->src[0]), dst->ne[1], (float *) dst->data,
                          (int64_t) (dst->nb[1] / sizeof(float)), p0, p1);
}

// AUTOGLM_AMX_TILES, read once per process; a bad value throws from the first product that asks
// (at graph build or in gemm_run, never inside a running op).
const std::string & amx_tiles_setting() {
    static const std::string pick = [] {
        const std::string v = std::getenv("AUTOGLM_AMX_TILES") ? std::getenv("AUTOGLM_AMX_TILES") : "";
        if (v.empty() || v == "auto" || v == "int8" || v == "bf16") return v;
        throw invalid_argument("AUTOGLM_AMX_TILES=" + v + " is unknown: expected int8, bf16 or auto (or unset)");
    }();
    return pick;
}

}  // namespace

bool gemm_uses_bf16_tiles(ggml_type type, gemm_isa isa, int64_t m, const char * tiles) {
    const gemm::kernel * kern = kernel_for(type);
    const bool can = isa == gemm_isa::amx && kern && kern->panels_amx_bf16;
    std::string pick = tiles ? tiles : "";
    if (pick.empty()) {
        const std::string & env = amx_tiles_setting();
        if (env == "int8") return false;
        if (env != "bf16") return can && m >= (kern->panels_amx ? amx_bf16_min_rows_block32 : amx_bf16_min_rows_kquant);
        return can;  // AUTOGLM_AMX_TILES=bf16 where there are tiles; other ISAs keep theirs
    }
    if (pick == "int8") return false;
    if (pick != "bf16") throw invalid_argument("gemm: tiles must be int8, bf16 or empty, not '" + pick + "'");
    if (!can) {
        throw invalid_argument(std::string("gemm: no BF16 tile kernel for ") + ggml_type_name(type) + " weights on " +
                               gemm_isa_name(isa) + " (the block-32 types on amx)");
    }
    return true;
}

const char * gemm_tiles(ggml_type type, int64_t m) {
    if (gemm_uses_bf16_tiles(type, gemm_best_isa(), m)) return "bf16";
    const gemm::kernel * kern = kernel_for(type);
    return gemm_best_isa() == gemm_isa::amx && kern && kern->panels_amx ? "int8" : "";
}

const char * gemm_isa_name(gemm_isa isa) {
    switch (isa) {
        case gemm_isa::avx_vnni: return "avx_vnni";
        case gemm_isa::avx512_vnni: return "avx512_vnni";
        case gemm_isa::avx512_bf16: return "avx512_bf16";
        case gemm_isa::amx: return "amx";
        default: return "avx2";
    }
}

std::vector<gemm_isa> gemm_isas() {
    std::vector<gemm_isa> out;
    for (gemm_isa isa : all_isas) {
        if (cpu_has(isa)) out.push_back(isa);
    }
    return out;
}

gemm_isa gemm_best_isa() {
    // a bad setting throws from the first call, which is at graph build (gemm_applies) or in gemm_run,
    // never inside a running op (those come only after a successful one); it is read once per process
    static const gemm_isa best = [] {
        const std::string pick = std::getenv("AUTOGLM_GEMM_ISA") ? std::getenv("AUTOGLM_GEMM_ISA") : "";
        const std::vector<gemm_isa> have = gemm_isas();
        const gemm_isa top = have.empty() ? gemm_isa::avx2 : have.back();
        if (pick.empty()) return top;
        for (gemm_isa isa : all_isas) {
            if (pick != gemm_isa_name(isa)) continue;
            if (!cpu_has(isa) && cpu_has(gemm_isa::avx2)) {
                throw invalid_argument("AUTOGLM_GEMM_ISA=" + pick + ": this CPU (or its OS) cannot run it; it runs " +
                                       gemm_isa_name(top) + " at best (unset the variable to use that)");
            }
            return isa;
        }
        throw invalid_argument("AUTOGLM_GEMM_ISA=" + pick +
                               " is unknown: expected avx2, avx_vnni, avx512_vnni, avx512_bf16 or amx, or unset for the best");
    }();
    return best;
}

bool gemm_available() { return cpu_has(gemm_isa::avx2); }

gemm_isa gemm_isa_by_name(const char * isa_name) {
    if (!isa_name || !*isa_name) return gemm_best_isa();
    const std::vector<gemm_isa> have = gemm_isas();
    auto it = std::find_if(have.begin(), have.end(), [&](gemm_isa i) { return std::strcmp(gemm_isa_name(i), isa_name) == 0; });
    if (it == have.end()) {
        throw invalid_argument(std::string("gemm: this CPU cannot run the '") + isa_name + "' kernels (see _gemm_isas())");
    }
    return *it;
}

bool gemm_applies(const ggml_tensor * w, int64_t n_rows) {
    const gemm::kernel * kern = kernel_for(w->type);
    if (!kern || !kern->panels || w->ne[0] % kern->block != 0 ||
        (w->ne[0] < variant_for(*kern, gemm_best_isa()).min_k && !gemm::forced_by_env()) || !gemm::weight_on_cpu(w, n_rows)) {
        return false;
    }
    return (kern->reads_repacked || !gemm::is_repacked(w)) && gemm_available();
}

ggml_tensor * gemm_mul_mat(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
    const gemm::kernel * kern = kernel_for(w->type);
    if (!kern || !kern->panels || x->type != GGML_TYPE_F32 || x->nb[0] != sizeof(float) || x->ne[0] != w->ne[0] ||
        x->ne[2] != 1 || x->ne[3] != 1) {
        // ggml cannot read our interleaved layout: such a weight must never get here with other operands
        if (x16_marked(w)) throw error(std::string("gemm: '") + ggml_get_name(w) + "' needs F32 [K, M] activations");
        return ggml_mul_mat(ctx, w, x);
    }
    ggml_tensor * args[1] = {x};
    if (gemm_uses_bf16_tiles(w->type, gemm_best_isa(), x->ne[1])) {
        const size_t bytes = bf16_tile_rows(x->ne[0], x->ne[1]).bytes() + 64;
        ggml_tensor * xb =
            ggml_custom_4d(ctx, GGML_TYPE_I8, (int64_t) bytes, 1, 1, 1, args, 1, pack_bf16_op, GGML_N_TASKS_MAX, nullptr);
        ggml_format_name(xb, "%s_bf16", kern->quantize_name);
        ggml_tensor * args2[1] = {xb};
        ggml_tensor * out =
            ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], 1, 1, args2, 1, gemm_bf16_op, GGML_N_TASKS_MAX, w);
        ggml_format_name(out, "%s_bf16", kern->name);
        return out;
    }
    ggml_tensor * xq = ggml_custom_4d(ctx, GGML_TYPE_I8, (int64_t) kern->row_bytes(w->ne[0]), x->ne[1], 1, 1, args, 1,
                                      quantize_op, GGML_N_TASKS_MAX, const_cast<gemm::kernel *>(kern));
    ggml_set_name(xq, kern->quantize_name);
    ggml_tensor * args2[1] = {xq};
    ggml_tensor * out = ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], 1, 1, args2, 1, gemm_op, GGML_N_TASKS_MAX, w);
    ggml_set_name(out, kern->name);
    return out;
}

void gemm_run(ggml_type type, const uint8_t * w, int64_t n, int64_t k, const float * a, int64_t m, float * c, int n_threads,
              const char * isa_name, bool interleaved, const char * tiles) {
    if (type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16) {
        return float_gemm_run(type, w, n, k, a, m, c, n_threads, gemm_isa_by_name(isa_name));
    }
    const gemm::kernel * kern = kernel_for(type);
    if (!kern) throw invalid_argument(std::string("gemm: no kernel for ") + ggml_type_name(type) + " weights");
    if (k % kern->block != 0 || n <= 0 || m <= 0) {
        throw invalid_argument("gemm " + std::string(ggml_type_name(type)) + ": K must be a multiple of " +
                               std::to_string(kern->block) + ", M and N positive");
    }
    if (!gemm_available() || !kern->panels) throw error("gemm: this CPU lacks AVX2/FMA/F16C");
    if (interleaved && (!x16_layout_of(type) || n % x16_rows != 0)) {
        throw invalid_argument(std::string("gemm: no interleaved layout for ") + ggml_type_name(type) +
                               " with N = " + std::to_string(n) + " (Q5_0, Q5_1, Q4_1; N a multiple of 16)");
    }
    const gemm_isa isa = gemm_isa_by_name(isa_name);
    if (gemm_uses_bf16_tiles(type, isa, m, tiles)) {
        const bf16_tile_rows rows(k, m);
        std::vector<uint32_t> packed(rows.words() + 16);
        uint32_t * ap = (uint32_t *) (((uintptr_t) packed.data() + 63) & ~(uintptr_t) 63);
        gemm::on_threads(n_threads, [&](int t, int nt) {
            pack_bf16_tile_rows(a, (size_t) k * sizeof(float), k, m, m * t / nt, m * (t + 1) / nt, ap);
        });
        gemm::on_threads(n_threads, [&](int t, int nt) {
            int64_t p0, p1;
            thread_panels((n + 7) / 8, bf16_tile_panels, t, nt, p0, p1);
            if (p0 < p1) kern->panels_amx_bf16(w, interleaved, n, k, (const uint8_t *) ap, m, c, n, p0, p1);
        });
        return;
    }
    const variant v = variant_for(*kern, isa);
    std::vector<uint8_t> q((size_t) m * kern->row_bytes(k));
    gemm::on_threads(n_threads, [&](int t, int nt) {
        kern->quantize(a, (size_t) k * sizeof(float), k, m * t / nt, m * (t + 1) / nt, q.data());
    });
    gemm::on_threads(n_threads, [&](int t, int nt) {
        int64_t p0, p1;
        thread_panels((n + 7) / 8, v.panels_per_step, t, nt, p0, p1);
        if (p0 < p1) v.panels(w, interleaved, n, k, q.data(), m, c, n, p0, p1);
    });
}

bool gemm_node_info(const ggml_tensor * t, const char ** family, double * ops, const char ** peak) {
    if (t->op != GGML_OP_CUSTOM) return false;
    if (float_gemm_node_info(t, family, ops, peak)) return true;
    *peak = "int8";
    void * user = nullptr;
    if (gemm::is_custom_op(t, gemm_op, &user)) {  // user: the weight
        const gemm::kernel * kern = kernel_for(static_cast<const ggml_tensor *>(user)->type);
        if (!kern) return false;
        // dst [N, M]; its source holds M quantized rows of row_bytes(K)
        const double k = (double) (t->src[0]->ne[0] / (int64_t) kern->act_block_bytes) * kern->block;
        *family = kern->family;
        *ops = 2.0 * k * (double) t->ne[0] * (double) t->ne[1];
        if (gemm_best_isa() == gemm_isa::amx && kern->panels_amx) *peak = "amx_int8";
        return true;
    }
    if (gemm::is_custom_op(t, gemm_bf16_op, &user)) {  // user: the weight
        const gemm::kernel * kern = kernel_for(static_cast<const ggml_tensor *>(user)->type);
        if (!kern) return false;
        static const std::vector<std::string> names = [] {
            std::vector<std::string> out;
            for (const gemm::kernel * kn : kernels()) {  // "GEMM q4_0 (ours)" -> "GEMM q4_0 on BF16 tiles (ours)"
                std::string f = kn->family;
                const size_t at = f.rfind(" (ours)");
                out.push_back(f.substr(0, at) + " on BF16 tiles" + (at == std::string::npos ? "" : f.substr(at)));
            }
            return out;
        }();
        *family = names[(size_t) (std::find(kernels().begin(), kernels().end(), kern) - kernels().begin())].c_str();
        *ops = 2.0 * (double) static_cast<const ggml_tensor *>(user)->ne[0] * (double) t->ne[0] * (double) t->ne[1];
        *peak = "amx_bf16";
        return true;
    }
    if (gemm::is_custom_op(t, pack_bf16_op)) {
        *family = "GEMM rows to BF16 (ours)";
        *ops = 0.0;
        return true;
    }
    if (gemm::is_custom_op(t, quantize_op, &user)) {  // user: the kernel
        *family = static_cast<const gemm::kernel *>(user)->quantize_family;
        *ops = 0.0;
        return true;
    }
    return false;
}

}  // namespace autoglm
