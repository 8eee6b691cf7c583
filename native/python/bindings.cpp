// pybind11 module autoglm_gguf._core: a thin layer over the C++ core. Heavy work releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "build_info.h"
#include "error.h"
#include "quantize.h"
#include "session.h"
#include "text_model.h"

namespace py = pybind11;

namespace {

// quantize(src, qtype, n_threads=0) -> uint8 array of shape src.shape[:-1] + (row_bytes,)
py::array_t<uint8_t> quantize(py::array src_any, const std::string & qtype, int n_threads) {
    const ggml_type type = autoglm::parse_storage_type(qtype);
    if (src_any.ndim() < 1) throw autoglm::invalid_argument("quantize: expected an array with at least one dimension");
    if (!py::isinstance<py::array_t<float>>(src_any) || !(src_any.flags() & py::array::c_style)) {
        throw autoglm::invalid_argument("quantize: expected a C-contiguous float32 array, got dtype " +
                                        std::string(py::str(src_any.dtype())) +
                                        " (use numpy.ascontiguousarray(x, dtype=numpy.float32))");
    }
    auto src = py::array_t<float, py::array::c_style>::ensure(src_any);
    const int64_t n_per_row = src.shape(src.ndim() - 1);
    const int64_t nrows = n_per_row == 0 ? 0 : (int64_t) src.size() / n_per_row;
    const size_t row_bytes = autoglm::storage_row_size(type, n_per_row);

    std::vector<py::ssize_t> shape(src.shape(), src.shape() + src.ndim());
    shape.back() = (py::ssize_t) row_bytes;
    py::array_t<uint8_t> out(shape);
    const float * sp = src.data();
    uint8_t * dp = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        autoglm::quantize_rows(type, sp, dp, nrows, n_per_row, n_threads);
    }
    return out;
}

autoglm::logits_mode parse_logits_mode(const std::string & m) {
    if (m == "last") return autoglm::logits_mode::last;
    if (m == "all") return autoglm::logits_mode::all;
    if (m == "none") return autoglm::logits_mode::none;
    throw autoglm::invalid_argument("logits must be 'last', 'all' or 'none', got '" + m + "'");
}

// Logits rows as a (n_rows, n_vocab) float32 array that owns the vector's memory (no copy).
py::array_t<float> logits_array(std::vector<float> && v, size_t n_vocab) {
    auto * heap = new std::vector<float>(std::move(v));
    py::capsule owner(heap, [](void * p) { delete (std::vector<float> *) p; });
    const py::ssize_t rows = n_vocab ? (py::ssize_t) (heap->size() / n_vocab) : 0;
    return py::array_t<float>({rows, (py::ssize_t) n_vocab}, {(py::ssize_t) (n_vocab * sizeof(float)), (py::ssize_t) sizeof(float)},
                              heap->data(), owner);
}

void bind_text(py::module_ & m) {
    py::class_<autoglm::text_model>(m, "TextModel")
        .def(py::init([](const std::string & path, int n_gpu_layers, int n_threads, bool repack) {
                 autoglm::model_params p;
                 p.n_gpu_layers = n_gpu_layers;
                 p.n_threads = n_threads;
                 p.repack = repack;
                 py::gil_scoped_release nogil;
                 return std::make_unique<autoglm::text_model>(path, p);
             }),
             py::arg("path"), py::arg("n_gpu_layers") = 0, py::arg("n_threads") = 0, py::arg("repack") = true)
        .def_property_readonly("hparams", [](const autoglm::text_model & tm) {
            const auto & h = tm.hparams();
            py::dict d;
            d["n_vocab"] = h.n_vocab; d["n_embd"] = h.n_embd; d["n_layer"] = h.n_layer; d["n_head"] = h.n_head;
            d["n_head_kv"] = h.n_head_kv; d["head_dim"] = h.head_dim; d["n_ff"] = h.n_ff; d["n_rot"] = h.n_rot;
            d["n_ctx_train"] = h.n_ctx_train; d["rope_theta"] = h.rope_theta; d["rms_eps"] = h.rms_eps;
            d["rope_sections"] = std::vector<int>(h.rope_sections.begin(), h.rope_sections.end()); d["mrope"] = h.mrope;
            return d;
        })
        .def_property_readonly("eog_ids", &autoglm::text_model::eog_ids)
        .def_property_readonly("chat_template", &autoglm::text_model::chat_template)
        .def_property_readonly("name", &autoglm::text_model::name)
        .def_property_readonly("weight_bytes", &autoglm::text_model::weight_bytes)
        .def_property_readonly("n_gpu_layers", &autoglm::text_model::n_gpu_layers)
        .def_property_readonly("devices", [](const autoglm::text_model & tm) { return tm.backends().describe(); })
        .def_property_readonly("vocab", [](const autoglm::text_model & tm) {
            const auto & v = tm.vocab();
            return py::make_tuple(v.tokens, v.types, v.merges);
        });

    py::class_<autoglm::session>(m, "Session")
        .def(py::init([](const autoglm::text_model & tm, uint32_t n_ctx, uint32_t n_batch, const std::string & kv_type) {
                 autoglm::session_params p;
                 p.n_ctx = n_ctx;
                 p.n_batch = n_batch;
                 if (kv_type == "f16") p.kv_type = GGML_TYPE_F16;
                 else if (kv_type == "f32") p.kv_type = GGML_TYPE_F32;
                 else throw autoglm::invalid_argument("kv_type must be 'f16' or 'f32', got '" + kv_type + "'");
                 py::gil_scoped_release nogil;
                 return std::make_unique<autoglm::session>(tm, p);
             }),
             py::arg("model"), py::arg("n_ctx") = 8192, py::arg("n_batch") = 512, py::arg("kv_type") = "f16",
             py::keep_alive<1, 2>())
        .def("eval_tokens", [](autoglm::session & s, const std::vector<int32_t> & tokens, const std::string & logits) {
                 const auto mode = parse_logits_mode(logits);
                 std::vector<float> out;
                 {
                     py::gil_scoped_release nogil;
                     out = s.eval_tokens(tokens, mode);
                 }
                 return logits_array(std::move(out), s.model().hparams().n_vocab);
             },
             py::arg("tokens"), py::arg("logits") = "last",
             "Append tokens to the context; returns logits rows (n_rows, n_vocab): 'last', 'all' or 'none'.")
        .def_property_readonly("n_past", &autoglm::session::n_past)
        .def_property_readonly("n_ctx", &autoglm::session::n_ctx)
        .def_property_readonly("tokens", &autoglm::session::tokens)
        .def("truncate", &autoglm::session::truncate, py::arg("n"), "Forget everything after the first n cells.");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "autoglm-gguf native core";
    m.attr("__version__") = AUTOGLM_VERSION;

    static py::exception<autoglm::error> native_error(m, "NativeError", PyExc_RuntimeError);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const autoglm::invalid_argument & e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        } catch (const autoglm::error & e) {
            PyErr_SetString(native_error.ptr(), e.what());
        }
    });

    bind_text(m);

    m.def("ggml_version", &autoglm::ggml_version_string, "Version of the ggml this module was built with.");
    m.def("ggml_commit", &autoglm::ggml_commit_string, "Commit of that ggml ('unknown' when built from an sdist).");
    m.def("backends", &autoglm::backend_names, "Names of the ggml backends compiled in, e.g. ['CPU', 'CUDA'].");
    m.def("devices", [] {
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
    }, "The devices ggml can run on, as dicts (backend, name, description, type, memory_total).");

    m.def("block_info", [](const std::string & qtype) {
        const ggml_type t = autoglm::parse_storage_type(qtype);
        return py::make_tuple(ggml_blck_size(t), ggml_type_size(t));
    }, py::arg("qtype"), "(elements per block, bytes per block) of a storage type.");

    m.def("quantize", &quantize, py::arg("src"), py::arg("qtype"), py::arg("n_threads") = 0,
          "Convert a C-contiguous float32 array row by row (last axis) to q4_0/q8_0/f16/bf16/f32 bytes with ggml's\n"
          "reference quantizer, on n_threads threads (0 = all). Returns uint8 of shape src.shape[:-1] + (row_bytes,).\n"
          "Raises ValueError for a row length that is not a multiple of the block size or for NaN/Inf input.");
}
