// Python view of the text runtime: TextModel and Session.
#include <cstdio>

#include "bind_common.h"
#include "error.h"
#include "session.h"
#include "text_model.h"

namespace {

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
    return py::array_t<float>({rows, (py::ssize_t) n_vocab},
                              {(py::ssize_t) (n_vocab * sizeof(float)), (py::ssize_t) sizeof(float)}, heap->data(), owner);
}

}  // namespace

void bind_text(py::module_ & m) {
    py::class_<autoglm::text_model>(m, "TextModel")
        .def(py::init([](const std::string & path, int n_gpu_layers, int n_threads, bool repack, py::object progress) {
                 autoglm::model_params p;
                 p.n_gpu_layers = n_gpu_layers;
                 p.n_threads = n_threads;
                 p.repack = repack;
                 // Load notices go to Python's logging (logger "autoglm_gguf"), where applications route them.
                 p.log = [](const std::string & msg) {
                     py::gil_scoped_acquire gil;
                     try {
                         py::module_::import("logging").attr("getLogger")("autoglm_gguf").attr("warning")(msg);
                     } catch (py::error_already_set &) {
                         std::fprintf(stderr, "autoglm: %s\n", msg.c_str());
                     }
                 };
                 // Called between tensors with the GIL taken back: a Python callback (a progress bar)
                 // can return False to stop, and Ctrl-C stops loading too.
                 p.progress = [progress](float f) {
                     py::gil_scoped_acquire gil;
                     if (PyErr_CheckSignals() != 0) {
                         PyErr_Clear();
                         return false;
                     }
                     if (progress.is_none()) return true;
                     try {
                         py::object r = progress(f);
                         return r.is_none() || truthy(r);
                     } catch (py::error_already_set &) {
                         return false;
                     }
                 };
                 py::gil_scoped_release nogil;
                 return std::make_unique<autoglm::text_model>(path, p);
             }),
             py::arg("path"), py::arg("n_gpu_layers") = 0, py::arg("n_threads") = 0, py::arg("repack") = true,
             py::arg("progress") = py::none(),
             "progress(fraction) is called while loading; returning False aborts (KeyboardInterrupt).")
        .def_property_readonly("hparams",
                               [](const autoglm::text_model & tm) {
                                   const auto & h = tm.hparams();
                                   py::dict d;
                                   d["n_vocab"] = h.n_vocab;
                                   d["n_embd"] = h.n_embd;
                                   d["n_layer"] = h.n_layer;
                                   d["n_head"] = h.n_head;
                                   d["n_head_kv"] = h.n_head_kv;
                                   d["head_dim"] = h.head_dim;
                                   d["n_ff"] = h.n_ff;
                                   d["n_rot"] = h.n_rot;
                                   d["n_ctx_train"] = h.n_ctx_train;
                                   d["rope_theta"] = h.rope_theta;
                                   d["rms_eps"] = h.rms_eps;
                                   d["rope_sections"] = std::vector<int>(h.rope_sections.begin(), h.rope_sections.end());
                                   d["mrope"] = h.mrope;
                                   return d;
                               })
        .def_property_readonly("eog_ids", &autoglm::text_model::eog_ids)
        .def_property_readonly("chat_template", &autoglm::text_model::chat_template)
        .def_property_readonly("name", &autoglm::text_model::name)
        .def_property_readonly("weight_bytes", &autoglm::text_model::weight_bytes)
        .def_property_readonly("mapped_bytes", &autoglm::text_model::mapped_bytes,
                               "Of weight_bytes, those read in place from the file's mapping (not copied at load;\n"
                               "AUTOGLM_MMAP=0 copies them).")
        .def_property_readonly("interleaved_weights", &autoglm::text_model::interleaved_weights,
                               "How many CPU matrices (Q5_0/Q5_1/Q4_1) are held in our interleaved layout\n"
                               "(native/src/block32_x16.h), multiplied only by our kernels (repack=False: none).")
        .def_property_readonly("n_gpu_layers", &autoglm::text_model::n_gpu_layers)
        .def_property_readonly("devices", [](const autoglm::text_model & tm) { return tm.backends().describe(); })
        .def_property_readonly(
            "placement",
            [](const autoglm::text_model & tm) {
                const auto p = tm.placement();
                py::dict d;
                d["layers"] = p.layers;
                d["output"] = p.output;
                d["token_embd"] = p.token_embd;
                return d;
            },
            "Where the weights are, read off their buffers: {'layers': [device per layer], 'output', 'token_embd'}.")
        .def(
            "tokenize",
            [](const autoglm::text_model & tm, const std::string & text, bool special) {
                py::gil_scoped_release nogil;
                return tm.tok().encode(text, special);
            },
            py::arg("text"), py::arg("special") = true,
            "Token ids of UTF-8 text; with special=True, added tokens written in the text (<|user|>...) are recognized.")
        .def(
            "detokenize",
            [](const autoglm::text_model & tm, const std::vector<int32_t> & ids) {
                for (int32_t id : ids) {
                    if (id < 0 || id >= (int32_t) tm.hparams().n_vocab) {
                        throw autoglm::invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary");
                    }
                }
                return py::bytes(tm.tok().decode(ids));
            },
            py::arg("ids"), "The bytes the ids stand for (may end inside a UTF-8 character).")
        .def_property_readonly("vocab", [](const autoglm::text_model & tm) {
            const auto & v = tm.vocab();
            return py::make_tuple(v.tokens, v.types, v.merges);
        });

    py::class_<autoglm::session>(m, "Session")
        .def(py::init([](const autoglm::text_model & tm, uint32_t n_ctx, uint32_t n_batch, const std::string & kv_type,
                         py::object flash_attn, const std::string & attention) {
                 autoglm::session_params p;
                 p.attention = attention;
                 if (!flash_attn.is_none()) {
                     p.flash_attn =
                         flash_attn.cast<bool>() ? autoglm::session_params::flash::on : autoglm::session_params::flash::off;
                 }
                 p.n_ctx = n_ctx;
                 p.n_batch = n_batch;
                 if (kv_type == "f16") p.kv_type = GGML_TYPE_F16;
                 else if (kv_type == "f32") p.kv_type = GGML_TYPE_F32;
                 else throw autoglm::invalid_argument("kv_type must be 'f16' or 'f32', got '" + kv_type + "'");
                 py::gil_scoped_release nogil;
                 return std::make_unique<autoglm::session>(tm, p);
             }),
             py::arg("model"), py::arg("n_ctx") = 8192, py::arg("n_batch") = 512, py::arg("kv_type") = "f16",
             py::arg("flash_attn") = py::none(), py::arg("attention") = "auto", py::keep_alive<1, 2>(),
             "flash_attn: None = automatic (on with the f16 cache), True/False to force.\n"
             "attention: with flash attention, the CPU kernel for prompt processing: 'auto' (F32, or BF16 for a micro-batch\n"
             "whose matrices run on the BF16 tiles), 'ggml', 'avx2', 'avx512', 'avx512_bf16'.")
        .def(
            "eval_tokens",
            [](autoglm::session & s, const std::vector<int32_t> & tokens, const std::string & logits) {
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
        .def(
            "eval_pieces",
            [](autoglm::session & s, const py::list & items, const std::string & logits) {
                const auto mode = parse_logits_mode(logits);
                std::vector<py::object> keep;
                const auto pieces = pieces_from_python(items, s.model().hparams().n_embd, keep);
                const auto cells = autoglm::layout_prompt(pieces);
                std::vector<float> out;
                {
                    py::gil_scoped_release nogil;
                    s.truncate(0);  // pieces are laid out from position 0: a fresh context
                    out = s.eval_cells(cells, 0, cells.size(), pieces, mode);
                }
                return logits_array(std::move(out), s.model().hparams().n_vocab);
            },
            py::arg("pieces"), py::arg("logits") = "all",
            "Evaluate a prompt of pieces (token lists and image tuples) from an empty context; returns logits rows.")
        .def_property_readonly("n_past", &autoglm::session::n_past)
        .def_property_readonly(
            "graph_stats",
            [](const autoglm::session & s) {
                py::dict d;
                d["built"] = s.graphs_built_;
                d["reused"] = s.graphs_reused_;
                return d;
            },
            "How many micro-batch graphs were built, and how many evaluations reused the previous one.")
        .def_property_readonly("n_ctx", &autoglm::session::n_ctx)
        .def_property_readonly(
            "kv_devices", [](const autoglm::session & s) { return s.cache().devices(); },
            "Per layer, the device holding its K/V cache, read off the buffers.")
        .def_property_readonly("kv_bytes", [](const autoglm::session & s) { return s.cache().bytes(); })
        .def_property_readonly("tokens", &autoglm::session::tokens)
        .def("truncate", &autoglm::session::truncate, py::arg("n"), "Forget everything after the first n cells.");
}
