// Python view of what this process computes on: ggml's backends and devices, the build of ggml's CPU
// kernels in use (backend_loader.h), and the machine's arithmetic peak (cpu_peak.h).
#include <optional>

#include "attention_run.h"
#include "backend.h"
#include "backend_loader.h"
#include "bind_common.h"
#include "block32_x16.h"
#include "build_info.h"
#include "cpu_peak.h"
#include "error.h"
#include "gemm.h"
#include "gemv_block32.h"
#include "gemv_block32_x16.h"
#include "gemv_q4_0.h"
#include "gemv_q4_k.h"
#include "gemv_q5_k.h"
#include "gemv_q6_k.h"
#include "quantize.h"
#include "read_bandwidth.h"

void bind_backends(py::module_ & m) {
    m.def(
        "_gemm",
        [](py::array_t<uint8_t, py::array::c_style> w, py::array_t<float, py::array::c_style> a, const std::string & type,
           int n_threads, const std::string & isa, bool interleaved, const std::string & tiles) {
            const ggml_type t = autoglm::parse_storage_type(type);
            if (w.ndim() != 2 || a.ndim() != 2) throw autoglm::invalid_argument("_gemm: expected 2-D arrays");
            const int64_t n = w.shape(0), k = a.shape(1), m = a.shape(0);
            if (k % ggml_blck_size(t) != 0 || (size_t) w.shape(1) != ggml_row_size(t, k)) {
                throw autoglm::invalid_argument("_gemm: w must be N rows of K/" + std::to_string(ggml_blck_size(t)) + " " + type +
                                                " blocks");
            }
            py::array_t<float> c({m, n});
            const uint8_t * wp = w.data();
            const float * ap = a.data();
            float * cp = c.mutable_data();
            {
                py::gil_scoped_release nogil;
                autoglm::gemm_run(t, wp, n, k, ap, m, cp, n_threads, isa.c_str(), interleaved, tiles.c_str());
            }
            return c;
        },
        py::arg("w"), py::arg("a"), py::arg("type"), py::arg("n_threads") = 1, py::arg("isa") = "",
        py::arg("interleaved") = false, py::arg("tiles") = "",
        "Our prompt GEMM for `type` weights (native/src/gemm.h): a [M, K] float32 x w (N rows of blocks)^T -> [M, N]\n"
        "float32, activations quantized to int8 as ggml's kernel for that type does, with the kernels of `isa` (one of\n"
        "_gemm_isas(); empty: the best, as the graph uses); `interleaved`: w from _x16_repack; `tiles` on amx: 'int8',\n"
        "'bf16' (activations and weights rounded to BF16) or empty (the graph's choice for M rows). For tests and\n"
        "bench_gemm.py.");
    m.def(
        "_attention",
        [](py::array_t<float, py::array::c_style> q, py::array_t<float, py::array::c_style> k,
           py::array_t<float, py::array::c_style> v, std::optional<py::array_t<uint16_t, py::array::c_style>> mask,
           const std::string & kernel, int n_threads) {
            if (q.ndim() != 3 || k.ndim() != 3 || v.ndim() != 3) {
                throw autoglm::invalid_argument("_attention: q, k and v must be 3-D: [tokens, heads, head_dim]");
            }
            const int64_t n = q.shape(0), n_head = q.shape(1), hd = q.shape(2), n_kv = k.shape(0), n_head_kv = k.shape(1);
            for (int d = 0; d < 3; ++d) {
                if (v.shape(d) != k.shape(d)) throw autoglm::invalid_argument("_attention: k and v must have one shape");
            }
            if (k.shape(2) != hd) throw autoglm::invalid_argument("_attention: q and k must have one head_dim");
            if (mask && (mask->ndim() != 2 || mask->shape(0) != n || mask->shape(1) != n_kv)) {
                throw autoglm::invalid_argument("_attention: mask must be [tokens, keys] float16 bits");
            }
            py::array_t<float> out({n, n_head, hd});
            const float *qp = q.data(), *kp = k.data(), *vp = v.data();
            const uint16_t * mp = mask ? mask->data() : nullptr;
            float * op = out.mutable_data();
            {
                py::gil_scoped_release nogil;
                autoglm::attention_run(qp, kp, vp, mp, hd, n_head, n, n_head_kv, n_kv, kernel, n_threads, op);
            }
            return out;
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask") = py::none(), py::arg("kernel") = "auto",
        py::arg("n_threads") = 1,
        "Our CPU attention (native/src/cpu_attention.h) on arrays: softmax(q k^T / sqrt(head_dim) + mask) v for q\n"
        "[n, n_head, hd], k and v [n_kv, n_head_kv, hd] float32 (grouped-query where n_head_kv < n_head), mask None or\n"
        "float16 bits (uint16) [n, n_kv] of 0 / -inf; `kernel`: auto, avx2, avx512 or avx512_bf16. For tests and\n"
        "bench/bench_attention.py.");
    m.def(
        "_x16_repack",
        [](py::array_t<uint8_t, py::array::c_style> w, const std::string & type) {
            const ggml_type t = autoglm::parse_storage_type(type);
            if (!autoglm::x16_layout_of(t)) {
                throw autoglm::invalid_argument("_x16_repack: no interleaved layout for " + type + " (q5_0, q5_1, q4_1)");
            }
            const int64_t n = w.ndim() == 2 ? w.shape(0) : 0;
            const size_t row = w.ndim() == 2 ? (size_t) w.shape(1) : 0;
            const size_t bb = autoglm::x16_layout_of(t)->block_bytes;
            if (n <= 0 || n % autoglm::x16_rows != 0 || row == 0 || row % bb != 0) {
                throw autoglm::invalid_argument("_x16_repack: w must be N rows of " + type + " blocks, N a multiple of 16");
            }
            py::array_t<uint8_t> out({(py::ssize_t) n, (py::ssize_t) row});
            autoglm::x16_repack(t, w.data(), n, (int64_t) (row / bb) * 32, out.mutable_data());
            return out;
        },
        py::arg("w"), py::arg("type"),
        "w (N rows of q5_0/q5_1/q4_1 blocks, GGUF layout, N a multiple of 16) in our interleaved layout\n"
        "(native/src/block32_x16.h), the same shape. For tests.");
    // Our GEMVs on ggml's repacked layouts: w in the GGUF layout, repacked here as ggml does on x86.
    using repack_fn = void (*)(const uint8_t *, int64_t, int64_t, uint8_t *);
    using run_fn = void (*)(const uint8_t *, int64_t, int64_t, const float *, float *, int, const char *);
    auto def_repacked_gemv = [&m](const char * name, ggml_type type, repack_fn repack, run_fn run, const char * doc) {
        m.def(
            name,
            [name, type, repack, run](py::array_t<uint8_t, py::array::c_style> w, py::array_t<float, py::array::c_style> x,
                                      int n_threads, const std::string & isa) {
                const std::string what = name, tname = ggml_type_name(type);
                if (w.ndim() != 2 || x.ndim() != 1) throw autoglm::invalid_argument(what + ": expected w 2-D and x 1-D");
                const int64_t n = w.shape(0), k = x.shape(0), block = ggml_blck_size(type);
                if (k % block != 0 || (size_t) w.shape(1) != ggml_row_size(type, k)) {
                    throw autoglm::invalid_argument(what + ": w must be N rows of K/" + std::to_string(block) + " " + tname +
                                                    " blocks");
                }
                if (n % 8 != 0) throw autoglm::invalid_argument(what + ": N must be a multiple of 8 (ggml repacks 8 rows)");
                std::vector<uint8_t> packed((size_t) w.size());
                py::array_t<float> y(n);
                const uint8_t * wp = w.data();
                const float * xp = x.data();
                float * yp = y.mutable_data();
                {
                    py::gil_scoped_release nogil;
                    repack(wp, n, k, packed.data());
                    run(packed.data(), n, k, xp, yp, n_threads, isa.c_str());
                }
                return y;
            },
            py::arg("w"), py::arg("x"), py::arg("n_threads") = 1, py::arg("isa") = "", doc);
    };
    def_repacked_gemv("_gemv_q4_0", GGML_TYPE_Q4_0, autoglm::repack_q4_0x8, autoglm::gemv_q4_0_run,
                      "Our decode GEMV (native/src/gemv_q4_0.h): w (N rows of K/32 Q4_0 blocks, GGUF layout) repacked as\n"
                      "ggml does on x86, times x [K] float32 quantized as ggml's Q8_0 -> y [N] float32, with the kernel of\n"
                      "`isa` (one of _gemm_isas(); empty: the best). For tests.");
    def_repacked_gemv("_gemv_q4_k", GGML_TYPE_Q4_K, autoglm::repack_q4_kx8, autoglm::gemv_q4_k_run,
                      "Our decode GEMV (native/src/gemv_q4_k.h): w (N rows of K/256 Q4_K blocks, GGUF layout) repacked as\n"
                      "ggml does on x86, times x [K] float32 quantized as ggml's Q8_K -> y [N] float32, with the kernel of\n"
                      "`isa` (one of _gemm_isas(); empty: the best). For tests.");
    m.def(
        "_gemv",
        [](py::array_t<uint8_t, py::array::c_style> w, py::array_t<float, py::array::c_style> x, const std::string & type,
           int n_threads, const std::string & isa, bool interleaved) {
            const ggml_type t = autoglm::parse_storage_type(type);
            if (w.ndim() != 2 || x.ndim() < 1 || x.ndim() > 2 || (x.ndim() == 2 && !interleaved)) {
                throw autoglm::invalid_argument("_gemv: expected w 2-D and x 1-D (2-D: rows, for interleaved weights)");
            }
            const int64_t n = w.shape(0), k = x.shape(x.ndim() - 1), m = x.ndim() == 2 ? x.shape(0) : 1;
            if (k % ggml_blck_size(t) != 0 || (size_t) w.shape(1) != ggml_row_size(t, k)) {
                throw autoglm::invalid_argument("_gemv: w must be N rows of K/" + std::to_string(ggml_blck_size(t)) + " " + type +
                                                " blocks");
            }
            py::array_t<float> y = x.ndim() == 2 ? py::array_t<float>({(py::ssize_t) m, (py::ssize_t) n}) : py::array_t<float>(n);
            const uint8_t * wp = w.data();
            const float * xp = x.data();
            float * yp = y.mutable_data();
            {
                py::gil_scoped_release nogil;
                if (interleaved) {
                    autoglm::x16_gemv_run(t, wp, n, k, xp, m, yp, n_threads, isa.c_str());
                } else if (t == GGML_TYPE_Q6_K) {
                    autoglm::gemv_q6_k_run(wp, n, k, xp, yp, n_threads, isa.c_str());
                } else if (t == GGML_TYPE_Q5_K) {
                    autoglm::gemv_q5_k_run(wp, n, k, xp, yp, n_threads, isa.c_str());
                } else {
                    autoglm::gemv_block32_run(t, wp, n, k, xp, yp, n_threads, isa.c_str());
                }
            }
            return y;
        },
        py::arg("w"), py::arg("x"), py::arg("type"), py::arg("n_threads") = 1, py::arg("isa") = "",
        py::arg("interleaved") = false,
        "Our decode GEMV for GGUF-layout q8_0/q5_0/q4_0/q5_1/q4_1 rows (native/src/gemv_block32.h), q5_k (gemv_q5_k.h) or q6_k\n"
        "rows (gemv_q6_k.h): w (N rows of blocks) times x [K] float32 quantized as ggml's Q8_0 (Q8_K for the K-quants)\n"
        "-> y [N] float32, with the kernel of `isa` (one of _gemm_isas();\n"
        "empty: the best); `interleaved`: q5_0/q5_1/q4_1 rows from _x16_repack (gemv_block32_x16.h), x [K] or [M, K] -> y [N]\n"
        "or [M, N]. For tests.");
    m.def(
        "_gemm_tiles",
        [](const std::string & type, int64_t m) {
            return std::string(autoglm::gemm_tiles(autoglm::parse_storage_type(type), m));
        },
        py::arg("type"), py::arg("m"),
        "Which AMX tiles the graph's GEMM of `type` weights over m rows runs on: 'bf16', 'int8', or '' where none.");
    m.def("_gemm_available", &autoglm::gemm_available, "Whether this CPU runs our prompt GEMMs (AVX2, FMA, F16C).");
    m.def(
        "_gemm_isas",
        [] {
            std::vector<std::string> out;
            for (autoglm::gemm_isa isa : autoglm::gemm_isas()) out.emplace_back(autoglm::gemm_isa_name(isa));
            return out;
        },
        "The instruction sets of our prompt GEMMs this machine runs, e.g. ['avx2', 'avx512_vnni'].");
    m.def(
        "_gemm_isa", [] { return std::string(autoglm::gemm_isa_name(autoglm::gemm_best_isa())); },
        "The instruction set the graph's prompt GEMMs use here (the best; AUTOGLM_GEMM_ISA=avx2 keeps AVX2).");
    m.def("backends", &autoglm::backend_names, "Names of the ggml backends compiled in, e.g. ['CPU', 'CUDA'].");
    m.def(
        "devices",
        [] {
            py::list out;
            for (const auto & d : autoglm::devices()) {
                py::dict e;
                e["backend"] = d.backend;
                e["name"] = d.name;
                e["description"] = d.description;
                e["type"] = d.type;
                e["memory_total"] = d.memory_total;
                out.append(e);
            }
            return out;
        },
        "The devices ggml can run on, as dicts (backend, name, description, type, memory_total).");

    m.def("cpu_variant", &autoglm::cpu_variant,
          "The build of ggml's CPU kernels in use: an ISA level such as 'haswell', 'icelake' or 'sapphirerapids'\n"
          "(chosen at first use: the best this CPU and OS can run, or $AUTOGLM_CPU_VARIANT), or 'built-in' for a\n"
          "build with one CPU backend compiled in.");
    m.def(
        "cpu_variants",
        [] {
            py::list out;
            for (const auto & v : autoglm::cpu_variants()) {
                py::dict e;
                e["name"] = v.name;
                e["path"] = v.path;
                e["score"] = v.score;
                e["runnable"] = v.score > 0;
                out.append(e);
            }
            return out;
        },
        "The CPU variants this build ships, best first, as dicts (name, path, score, runnable); [] for a build\n"
        "without variants. runnable is False where this CPU or OS lacks an instruction set the variant needs.");
    m.def("cpu_features", &autoglm::cpu_features,
          "What the CPU backend in use was built with and this machine has, as ggml reports it (e.g. 'AVX2',\n"
          "'AVX512_VNNI', 'AMX_INT8', 'REPACK').");

    m.def("default_thread_count", &autoglm::default_thread_count, "Threads used when none are given: the physical cores.");
    m.def(
        "cpu_peak",
        [](int threads) {
            const autoglm::cpu_peak_info p = autoglm::cpu_peak(threads);
            py::dict d;
            d["clock_ghz"] = p.clock_ghz;
            d["threads"] = p.threads;
            d["f32_gops"] = p.f32_gops();
            d["bf16_gops"] = p.bf16_gops();
            d["int8_gops"] = p.int8_gops();
            d["amx_int8_gops"] = p.amx_int8_gops();
            d["amx_bf16_gops"] = p.amx_bf16_gops();
            d["f32_isa"] = p.f32_isa;
            d["bf16_isa"] = p.bf16_isa;
            d["int8_isa"] = p.int8_isa;
            d["amx_int8_isa"] = p.amx_int8_isa;
            d["amx_bf16_isa"] = p.amx_bf16_isa;
            return d;
        },
        py::arg("threads"),
        "This machine's arithmetic peak on `threads` cores for the CPU kernels in use, per kernel family (GOP/s:\n"
        "f32, bf16, int8, amx_int8, amx_bf16), from the measured clock (a chain of dependent adds, one per cycle) times the\n"
        "measured operations per cycle of the widest instructions those kernels use (see native/src/cpu_peak.h).");
    m.def(
        "read_bandwidth",
        [](int threads, int64_t mib, int reps) {
            py::gil_scoped_release nogil;
            return autoglm::read_bandwidth_gbs(threads, mib, reps);
        },
        py::arg("threads"), py::arg("mib") = 256, py::arg("reps") = 5,
        "The rate (GB/s) at which `threads` threads read memory: each sums its share of `mib` MiB, best of `reps`\n"
        "passes; the ceiling of a bandwidth-bound kernel such as the decode GEMVs (see native/src/read_bandwidth.h).");
}
