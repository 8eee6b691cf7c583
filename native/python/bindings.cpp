// pybind11 module autoglm_gguf._core: a thin layer over the C++ core. Heavy work releases the GIL.
#include "arch.h"
#include "bind_common.h"
#include "build_info.h"
#include "error.h"
#include "quantize.h"
#include "requantize.h"

namespace {

// quantize(src, qtype, n_threads=0, imatrix=None) -> uint8 array of shape src.shape[:-1] + (row_bytes,)
py::array_t<uint8_t> quantize(py::array src_any, const std::string & qtype, int n_threads, py::object imatrix_obj) {
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
    std::vector<float> imatrix;
    if (!imatrix_obj.is_none()) {
        auto im = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(imatrix_obj);
        if (!im || im.ndim() != 1 || im.shape(0) != n_per_row) {
            throw autoglm::invalid_argument("quantize: imatrix must be a 1-D float array of the row length (" +
                                            std::to_string(n_per_row) + ")");
        }
        imatrix.assign(im.data(), im.data() + n_per_row);
    }

    std::vector<py::ssize_t> shape(src.shape(), src.shape() + src.ndim());
    shape.back() = (py::ssize_t) row_bytes;
    py::array_t<uint8_t> out(shape);
    const float * sp = src.data();
    uint8_t * dp = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        autoglm::quantize_rows(type, sp, dp, nrows, n_per_row, n_threads, imatrix.empty() ? nullptr : imatrix.data());
    }
    return out;
}

// requantize(in_path, out_path, tensors=[(name, type, imatrix or None)], file_type, kv=[(key, str|int)],
//            n_threads=0, on_tensor=None): see requantize.h.
void requantize(const std::string & in_path, const std::string & out_path, py::list tensors, uint32_t file_type, py::list kv,
                int n_threads, py::object on_tensor) {
    autoglm::requant_options o;
    o.file_type = file_type;
    o.n_threads = n_threads;
    for (py::handle h : tensors) {
        auto tup = h.cast<py::tuple>();
        if (tup.size() != 3) throw autoglm::invalid_argument("requantize: each tensor is (name, type, imatrix or None)");
        autoglm::requant_tensor rt;
        rt.name = tup[0].cast<std::string>();
        rt.type = autoglm::parse_storage_type(tup[1].cast<std::string>());
        if (!tup[2].is_none()) {
            auto im = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(tup[2]);
            if (!im || im.ndim() != 1) throw autoglm::invalid_argument("requantize: imatrix for " + rt.name + " must be 1-D");
            rt.imatrix.assign(im.data(), im.data() + im.shape(0));
        }
        o.tensors.push_back(std::move(rt));
    }
    for (py::handle h : kv) {
        auto tup = h.cast<py::tuple>();
        autoglm::requant_kv e;
        e.key = tup[0].cast<std::string>();
        if (py::isinstance<py::str>(tup[1])) {
            e.is_string = true;
            e.str = tup[1].cast<std::string>();
        } else {
            e.u32 = tup[1].cast<uint32_t>();
        }
        o.kv.push_back(std::move(e));
    }
    if (!on_tensor.is_none()) {
        o.on_tensor = [on_tensor](size_t i, uint64_t done) {
            py::gil_scoped_acquire gil;
            on_tensor(i, done);  // an exception (Ctrl-C) propagates and aborts the write
        };
    }
    py::gil_scoped_release nogil;
    autoglm::requantize_gguf(in_path, out_path, o);
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
    m.def(
        "block_info",
        [](const std::string & qtype) {
            const ggml_type t = autoglm::parse_storage_type(qtype);
            return py::make_tuple(ggml_blck_size(t), ggml_type_size(t));
        },
        py::arg("qtype"), "(elements per block, bytes per block) of a storage type.");

    m.def("quantize", &quantize, py::arg("src"), py::arg("qtype"), py::arg("n_threads") = 0, py::arg("imatrix") = py::none(),
          "Convert a C-contiguous float32 array row by row (last axis) to a ggml storage type (f32, f16, bf16, q4_0,\n"
          "q8_0, q4_k, q6_k, iq4_xs, ...) with ggml's quantizer, weighted by `imatrix` (mean squared activation per\n"
          "column) when given, on n_threads threads (0 = all). Returns uint8 of shape src.shape[:-1] + (row_bytes,).\n"
          "Raises ValueError for a row length that is not a multiple of the block size, for NaN/Inf input, or for a\n"
          "type that needs an importance matrix without one.");
    m.def("requantize", &requantize, py::arg("in_path"), py::arg("out_path"), py::arg("tensors"), py::arg("file_type"),
          py::arg("kv") = py::list(), py::arg("n_threads") = 0, py::arg("on_tensor") = py::none(),
          "Write out_path from the GGUF in_path with each tensor in the given type, laid out as llama-quantize lays\n"
          "out its output. tensors: [(name, type, imatrix or None)] in output order, every input tensor once.");

    m.def(
        "gguf_names",
        [] {
            auto table = [](const autoglm::arch::entry * e, size_t n) {
                py::dict d;
                for (size_t i = 0; i < n; ++i) d[e[i].id] = e[i].gguf;
                return d;
            };
            size_t nk = 0, nt = 0;
            const auto * keys = autoglm::arch::keys(nk);
            const auto * tensors = autoglm::arch::tensors(nt);
            py::dict out;
            out["keys"] = table(keys, nk);
            out["tensors"] = table(tensors, nt);
            out["text_arch"] = autoglm::arch::TEXT_ARCH;
            out["vision_arch"] = autoglm::arch::VISION_ARCH;
            out["vision_projector"] = autoglm::arch::VISION_PROJECTOR;
            return out;
        },
        "The GGUF keys and tensor names the loaders read (native/src/arch.h), for the converter to write:\n"
        "{'keys': {ID: 'gguf.key'}, 'tensors': {ID: 'name' ('%d' = block index)}, 'text_arch', 'vision_arch',\n"
        "'vision_projector'}.");

    bind_backends(m);
    bind_text(m);
    bind_sampling(m);
    bind_tokenizer(m);
    bind_generate(m);
    bind_prompt(m);
    bind_image(m);
    bind_vision(m);
    bind_imatrix(m);  // after bind_text: adds methods to Session
}
