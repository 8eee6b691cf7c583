// Python view of the tokenizer: Tokenizer, plus the UTF-8/Unicode helpers its tests use.
#include "bind_common.h"
#include "error.h"
#include "tokenizer.h"
#include "unicode.h"

namespace {

int32_t checked_id(int64_t id, const autoglm::tokenizer & tok, const char * what) {
    if (id < 0 || id >= tok.n_vocab()) {
        throw autoglm::invalid_argument(std::string(what) + ": token id " + std::to_string(id) + " is out of range [0, " +
                                        std::to_string(tok.n_vocab()) + ")");
    }
    return (int32_t) id;
}

}  // namespace

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
        .def(
            "encode",
            [](const tokenizer & t, const std::string & text, bool parse_special) {
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
        .def(
            "decode",
            [](const tokenizer & t, const std::vector<int64_t> & ids) {
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
        .def(
            "token_bytes",
            [](const tokenizer & t, int64_t id) { return py::bytes(t.token_bytes(checked_id(id, t, "token_bytes"))); },
            py::arg("id"), "Raw bytes of one token; added tokens give their text, unused ones b''.")
        .def(
            "token_type", [](const tokenizer & t, int64_t id) { return t.type(checked_id(id, t, "token_type")); }, py::arg("id"),
            "GGUF token type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).")
        .def(
            "find", [](const tokenizer & t, const std::string & text) { return t.find(text); }, py::arg("text"),
            "Id of the token whose GGUF text is exactly `text`, or -1.")
        .def_property_readonly("n_vocab", &tokenizer::n_vocab);

    m.def(
        "utf8_complete_prefix", [](const std::string & data) { return autoglm::utf8_complete_prefix(data); }, py::arg("data"),
        "Length of the longest prefix of data (bytes) that does not end inside a UTF-8 character.");
    m.def(
        "glm4_pretokenize",
        [](const std::string & text) {
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
    m.def(
        "unicode_class", [](uint32_t cp) { return (int) autoglm::classify(cp); }, py::arg("cp"),
        "Pre-tokenizer class of a code point: 0 other, 1 letter \\p{L}, 2 number \\p{N}, 3 space \\s.");
    m.def("unicode_tables_version", &autoglm::unicode_tables_version, "Unicode version of the pre-tokenizer's class tables.");
}
