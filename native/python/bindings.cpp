// pybind11 module autoglm_gguf._core: a thin layer over the C++ core. Heavy work releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "build_info.h"
#include "error.h"
#include "quantize.h"
#include "tokenizer.h"
#include "unicode.h"

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

int32_t checked_id(int64_t id, const autoglm::tokenizer & tok, const char * what) {
    if (id < 0 || id >= tok.n_vocab()) {
        throw autoglm::invalid_argument(std::string(what) + ": token id " + std::to_string(id) +
                                        " is out of range [0, " + std::to_string(tok.n_vocab()) + ")");
    }
    return (int32_t) id;
}

void bind_tokenizer(py::module_ & m) {
    using autoglm::tokenizer;
    py::class_<tokenizer>(m, "Tokenizer",
        "GLM-4 byte-level BPE tokenizer over a GGUF's tokenizer.ggml.tokens / token_type / merges arrays.\n"
        "Raises NativeError for malformed arrays (naming the entry).")
        .def(py::init([](std::vector<std::string> tokens, std::vector<int32_t> types, std::vector<std::string> merges,
                         bool ignore_merges) {
                 autoglm::vocab_data d{std::move(tokens), std::move(types), std::move(merges), ignore_merges};
                 py::gil_scoped_release nogil;
                 return std::make_unique<tokenizer>(std::move(d));
             }),
             py::arg("tokens"), py::arg("types"), py::arg("merges"), py::arg("ignore_merges") = true,
             "ignore_merges: a pre-token that is a vocabulary token is emitted whole (GLM-4's setting).")
        .def("encode", [](const tokenizer & t, const std::string & text, bool parse_special) {
                 std::vector<int32_t> ids;
                 {
                     py::gil_scoped_release nogil;
                     ids = t.encode(text, parse_special);
                 }
                 return ids;
             },
             py::arg("text"), py::arg("parse_special") = true,
             "Token ids of text (str, or bytes: invalid UTF-8 is kept byte for byte). With parse_special, added\n"
             "tokens (control / user-defined) in the text become their ids; without, their text is ordinary text.")
        .def("decode", [](const tokenizer & t, const std::vector<int64_t> & ids) {
                 std::vector<int32_t> ids32(ids.size());
                 for (size_t i = 0; i < ids.size(); ++i) ids32[i] = checked_id(ids[i], t, "decode");
                 std::string out;
                 {
                     py::gil_scoped_release nogil;
                     out = t.decode(ids32);
                 }
                 return py::bytes(out);
             },
             py::arg("ids"), "The bytes the ids stand for (may end inside a UTF-8 character).")
        .def("token_bytes", [](const tokenizer & t, int64_t id) {
                 return py::bytes(t.token_bytes(checked_id(id, t, "token_bytes")));
             },
             py::arg("id"), "Raw bytes of one token; added tokens give their text, unused ones b''.")
        .def("token_type", [](const tokenizer & t, int64_t id) { return t.type(checked_id(id, t, "token_type")); },
             py::arg("id"), "GGUF token type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).")
        .def("find", [](const tokenizer & t, const std::string & text) { return t.find(text); }, py::arg("text"),
             "Id of the token whose GGUF text is exactly `text`, or -1.")
        .def_property_readonly("n_vocab", &tokenizer::n_vocab);

    m.def("utf8_complete_prefix", [](const std::string & data) { return autoglm::utf8_complete_prefix(data); },
          py::arg("data"), "Length of the longest prefix of data (bytes) that does not end inside a UTF-8 character.");
    m.def("glm4_pretokenize", [](const std::string & text) {
              std::vector<std::pair<size_t, size_t>> pieces;
              {
                  py::gil_scoped_release nogil;
                  autoglm::glm4_pretokenize(text, pieces);
              }
              py::list out;
              for (const auto & [a, b] : pieces) out.append(py::bytes(text.data() + a, b - a));
              return out;
          },
          py::arg("text"), "The GLM-4 pre-tokenizer's pieces of text (str or bytes), as UTF-8 bytes.");
    m.def("unicode_class", [](uint32_t cp) { return (int) autoglm::classify(cp); }, py::arg("cp"),
          "Pre-tokenizer class of a code point: 0 other, 1 letter \\p{L}, 2 number \\p{N}, 3 space \\s.");
    m.def("unicode_tables_version", &autoglm::unicode_tables_version,
          "Unicode version of the pre-tokenizer's class tables.");
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

    bind_tokenizer(m);
}
