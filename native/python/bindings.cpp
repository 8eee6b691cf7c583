// pybind11 module autoglm_gguf._core: a thin layer over the C++ core. Heavy work releases the GIL.
#include "bind_common.h"
#include "build_info.h"
#include "error.h"
#include "quantize.h"

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

}  // namespace

// The error kinds a caller acts on arrive as the package's own exception types (autoglm_gguf.errors),
// not as text to match. Falls back to RuntimeError if that module cannot be imported.
static void set_package_error(const char * name, const char * what) {
    try {
        py::object type = py::module_::import("autoglm_gguf.errors").attr(name);
        PyErr_SetString(type.ptr(), what);
    } catch (py::error_already_set &) {
        PyErr_SetString(PyExc_RuntimeError, what);
    }
}

PYBIND11_MODULE(_core, m) {
    m.doc() = "autoglm-gguf native core";
    m.attr("__version__") = AUTOGLM_VERSION;

    static py::exception<autoglm::error> native_error(m, "NativeError", PyExc_RuntimeError);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const autoglm::aborted & e) {
            // Only our own callbacks abort, and they do so when Ctrl-C (or the Python callback) asks.
            PyErr_SetString(PyExc_KeyboardInterrupt, e.what());
        } catch (const autoglm::context_full & e) {
            set_package_error("ContextFullError", e.what());
        } catch (const autoglm::busy & e) {
            set_package_error("SessionBusyError", e.what());
        } catch (const autoglm::file_error & e) {
            set_package_error("GGUFFileError", e.what());
        } catch (const autoglm::out_of_memory & e) {
            set_package_error("OutOfMemoryError", e.what());
        } catch (const autoglm::invalid_argument & e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        } catch (const autoglm::error & e) {
            PyErr_SetString(native_error.ptr(), e.what());
        }
    });

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

    bind_text(m);
    bind_sampling(m);
    bind_tokenizer(m);
    bind_generate(m);
    bind_prompt(m);
    bind_image(m);
    bind_vision(m);
}
