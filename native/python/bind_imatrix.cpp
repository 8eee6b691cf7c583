// Python view of the importance-matrix collector (imatrix_collector.h): methods added to the Session
// class that bind_text registers. The collection driver and the file format are in
// python/autoglm_gguf/imatrix.py.
#include "bind_common.h"
#include "error.h"
#include "session.h"

namespace {

// Evaluates a whole prompt from an empty context, one micro-batch per native call, so that between
// micro-batches progress(n_done, n_total) can run and Ctrl-C can stop it. The micro-batches are the
// ones a single eval_pieces call would make (a run of text or one image's rows, cut every n_batch cells),
// so which products pass the 16-row rule does not depend on how the prompt is driven. Every
// micro-batch asks for logits (and drops them): a graph with no logits ends at the last layer's K/V
// cache writes, so that layer's Q, output and FFN products would never run. One row ("last") is
// enough for them; collecting the output head takes every row ("all"), as llama-imatrix computes
// logits for every token.
uint32_t imatrix_eval(autoglm::session & s, const py::list & items, py::object progress) {
    auto in_use = s.acquire();
    const auto & hp = s.model().hparams();
    std::vector<py::object> keep;
    std::vector<autoglm::prompt_piece> pieces;
    if (items.size() == 0 || py::isinstance<py::int_>(items[0])) {
        pieces.push_back(autoglm::prompt_piece{items.cast<std::vector<int32_t>>()});
    } else {
        pieces = pieces_from_python(items, hp.n_embd, keep);
    }
    for (const auto & p : pieces) {
        for (int32_t id : p.tokens) {
            if (id < 0 || id >= (int32_t) hp.n_vocab) {
                throw autoglm::invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                                std::to_string(hp.n_vocab) + ")");
            }
        }
    }
    const auto cells = autoglm::layout_prompt(pieces);
    if (cells.size() > s.n_ctx()) {
        throw autoglm::context_full("the prompt has " + std::to_string(cells.size()) + " cells but n_ctx is " +
                                    std::to_string(s.n_ctx()) + "; create the session with a larger n_ctx");
    }
    const auto mode = s.imatrix().process_output() ? autoglm::logits_mode::all : autoglm::logits_mode::last;
    s.truncate(0);  // every token must be computed: a cached prefix would not be counted
    const size_t n = cells.size();
    for (size_t i = 0; i < n;) {
        // The GIL is held here, between micro-batches.
        if (!progress.is_none()) {
            py::object r = progress(i, n);
            if (!r.is_none() && !truthy(r)) throw autoglm::aborted("stopped by the progress callback");
        }
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        size_t end = i + 1;
        while (end < n && cells[end].piece == cells[i].piece && end - i < s.n_batch()) ++end;
        py::gil_scoped_release nogil;
        s.eval_cells(cells, i, end, pieces, mode);
        i = end;
    }
    if (!progress.is_none()) progress(n, n);
    return (uint32_t) n;
}

py::dict imatrix_stats(autoglm::session & s) {
    auto in_use = s.acquire();
    py::dict out;
    for (const auto & [name, e] : s.imatrix().stats()) {
        py::array_t<double> sums((py::ssize_t) e.sums.size());
        std::copy(e.sums.begin(), e.sums.end(), sums.mutable_data());
        out[py::str(name)] = py::make_tuple(sums, e.count);
    }
    return out;
}

}  // namespace

void bind_imatrix(py::module_ & m) {
    auto cls = py::reinterpret_borrow<py::class_<autoglm::session>>(m.attr("Session"));
    cls.def(
           "imatrix_start",
           [](autoglm::session & s, bool process_output) {
               auto in_use = s.acquire();
               if (const int n = s.model().interleaved_weights(); n > 0) {
                   throw autoglm::invalid_argument(
                       "imatrix_start: " + std::to_string(n) +
                       " of this model's matrices are held in our interleaved Q5_0/Q5_1/Q4_1 layout, which ggml's "
                       "matmul nodes (where the statistics come from) never multiply; load the model with repack=False");
               }
               auto & c = s.imatrix();
               c.set_process_output(process_output);
               c.active = true;
           },
           py::arg("process_output") = false,
           "Start (or resume) adding importance-matrix statistics from every evaluated micro-batch of 16 or more\n"
           "tokens: per decoder weight, the sum of squared inputs per column and the number of rows.\n"
           "process_output: also the output head (output.weight), as llama-imatrix --process-output.\n"
           "Evaluate with imatrix_eval: an evaluation that asks for no logits skips the last layer's Q,\n"
           "attention-output and FFN products.")
        .def(
            "imatrix_stop",
            [](autoglm::session & s) {
                auto in_use = s.acquire();
                s.imatrix().active = false;
            },
            "Stop collecting; the statistics are kept.")
        .def(
            "imatrix_reset",
            [](autoglm::session & s) {
                auto in_use = s.acquire();
                s.imatrix().clear();
            },
            "Forget the statistics collected so far.")
        .def_property_readonly("imatrix_active", [](autoglm::session & s) { return s.imatrix().active; })
        .def("imatrix_stats", &imatrix_stats,
             "{weight name: (float64 sums of x^2 per input column, int row count)} collected so far.")
        .def("imatrix_eval", &imatrix_eval, py::arg("prompt"), py::arg("progress") = py::none(),
             "Evaluate a prompt (token ids, or pieces with images) from an empty context, for collection (every\n"
             "micro-batch runs every layer; logits are not returned). progress(n_done,\n"
             "n_total) is called between micro-batches; returning False or Ctrl-C stops (KeyboardInterrupt).\n"
             "Returns the number of cells evaluated.");
}
