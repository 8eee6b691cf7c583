// Python view of generation: Generator, an iterator of UTF-8 byte pieces. Each step runs without the
// GIL; between steps Python code (and KeyboardInterrupt) runs, so breaking out of a stream stops
// generation at once and leaves the session usable.
#include "bind_common.h"
#include "chat_template.h"
#include "error.h"
#include "generate.h"

namespace {

const char * reason_name(autoglm::finish_reason r) {
    switch (r) {
        case autoglm::finish_reason::stop: return "stop";
        case autoglm::finish_reason::length: return "length";
        default: return nullptr;
    }
}

// A Python object with fill_mask(address, n_bytes) and accept(token_id) -> bool as the generator's
// token_constraint. Called with the GIL released; a Python exception is put back into this thread's
// error indicator and surfaces from __next__ as itself.
class py_constraint final : public autoglm::token_constraint {
public:
    explicit py_constraint(py::object obj) : obj_(std::move(obj)) {}
    ~py_constraint() override {
        py::gil_scoped_acquire gil;
        obj_ = py::object();
    }
    void fill_mask(uint32_t * words, size_t n_words) override {
        call([&] { obj_.attr("fill_mask")(reinterpret_cast<uintptr_t>(words), n_words * sizeof(uint32_t)); });
    }
    bool accept(int32_t id) override {
        bool more = true;
        call([&] { more = truthy(obj_.attr("accept")(id)); });
        return more;
    }

private:
    template <typename F>
    void call(F && f) {
        py::gil_scoped_acquire gil;
        try {
            f();
        } catch (py::error_already_set & e) {
            e.restore();
            throw autoglm::aborted("the generation's constraint raised an exception");
        }
    }
    py::object obj_;
};

}  // namespace

void bind_generate(py::module_ & m) {
    m.def(
        "format_chat",
        [](const py::list & messages, bool add_generation_prompt) {
            // messages: [{"role": str, "parts": [("text", str) | ("image", "") | ("video", "")], "metadata": str}]
            std::vector<autoglm::chat_message> msgs;
            for (const auto & item : messages) {
                const py::dict d = item.cast<py::dict>();
                autoglm::chat_message cm;
                cm.role = d["role"].cast<std::string>();
                if (d.contains("metadata")) cm.metadata = d["metadata"].cast<std::string>();
                for (const auto & part : d["parts"].cast<py::list>()) {
                    const auto t = part.cast<std::pair<std::string, std::string>>();
                    autoglm::chat_part p;
                    if (t.first == "image") p.type = autoglm::chat_part::kind::image;
                    else if (t.first == "video") p.type = autoglm::chat_part::kind::video;
                    else p.text = t.second;
                    cm.parts.push_back(std::move(p));
                }
                msgs.push_back(std::move(cm));
            }
            return autoglm::format_glm4v_chat(msgs, add_generation_prompt);
        },
        py::arg("messages"), py::arg("add_generation_prompt") = true,
        "Render messages in the built-in GLM-4.1V / AutoGLM chat format.");

    using autoglm::generator;
    py::class_<generator>(m, "Generator")
        .def(py::init([](autoglm::session & s, const py::list & prompt_items, const autoglm::sampling_params & sp,
                         int32_t max_tokens, const std::vector<std::string> & stop, bool stop_at_eog, py::object progress,
                         py::object constraint) {
                 // A flat list of ints is a text prompt; otherwise a list of pieces (see pieces_from_python).
                 std::vector<py::object> keep;
                 std::vector<autoglm::prompt_piece> prompt;
                 if (prompt_items.size() == 0 || py::isinstance<py::int_>(prompt_items[0])) {
                     prompt.push_back(autoglm::prompt_piece{prompt_items.cast<std::vector<int32_t>>()});
                 } else {
                     prompt = pieces_from_python(prompt_items, s.model().hparams().n_embd, keep);
                 }
                 autoglm::generate_params p;
                 p.sampling = sp;
                 p.max_tokens = max_tokens;
                 p.stop = stop;
                 p.stop_at_eog = stop_at_eog;
                 if (!constraint.is_none()) p.constraint = std::make_shared<py_constraint>(constraint);
                 // Between prompt micro-batches, with the GIL taken back: progress(n_done, n_total) may
                 // return False to stop, and Ctrl-C stops too (KeyboardInterrupt). An exception raised by
                 // the callback stops the prompt and is re-raised as it was.
                 bool callback_raised = false;
                 // Taken before touching the session: another thread evaluating on it gets `busy` here,
                 // instead of its callback being swapped out from under it.
                 auto in_use = s.acquire();
                 s.progress = [&progress, &callback_raised](uint32_t done, uint32_t total) {
                     py::gil_scoped_acquire gil;
                     if (!progress.is_none()) {
                         try {
                             py::object r = progress(done, total);
                             if (!r.is_none() && !truthy(r)) return false;
                         } catch (py::error_already_set & e) {
                             e.restore();  // back into this thread's error indicator, re-raised below
                             callback_raised = true;
                             return false;
                         }
                     }
                     if (PyErr_CheckSignals() == 0) return true;
                     PyErr_Clear();
                     return false;
                 };
                 struct reset_progress {
                     autoglm::session & s;
                     ~reset_progress() { s.progress = nullptr; }
                 } guard{s};
                 try {
                     py::gil_scoped_release nogil;
                     return std::make_unique<generator>(s, s.model().tok(), prompt, p);
                 } catch (const autoglm::aborted &) {
                     if (callback_raised) throw py::error_already_set();
                     throw;
                 }
             }),
             py::arg("session"), py::arg("prompt"), py::arg("params"), py::arg("max_tokens") = 256,
             py::arg("stop") = std::vector<std::string>{}, py::arg("stop_at_eog") = true, py::arg("progress") = py::none(),
             py::arg("constraint") = py::none(), py::keep_alive<1, 2>(),
             "Prefill `prompt` (reusing the session's cached prefix) and prepare to generate. "
             "progress(n_done, n_total) is called between prompt micro-batches; returning False stops "
             "(KeyboardInterrupt), and the session's cache is left as it was. constraint: an object with "
             "fill_mask(address, n_bytes) (set one bit per allowed token id into the zeroed uint32 words) and "
             "accept(token_id) -> bool (False: complete, stop after this token).")
        .def("__iter__", [](generator & g) -> generator & { return g; })
        .def("__next__",
             [](generator & g) {
                 std::string piece;
                 bool more;
                 try {
                     py::gil_scoped_release nogil;
                     more = g.next(piece);
                 } catch (const autoglm::aborted &) {
                     if (PyErr_Occurred()) throw py::error_already_set();  // the constraint's own exception
                     throw;
                 }
                 if (!more) throw py::stop_iteration();
                 return py::bytes(piece);
             })
        .def_property_readonly("finish_reason", [](const generator & g) { return reason_name(g.reason()); })
        .def_property_readonly("generated", &generator::generated)
        .def_property_readonly("timings", [](const generator & g) {
            const auto & t = g.timings();
            py::dict d;
            d["prompt_tokens"] = t.n_prompt;
            d["prompt_tokens_reused"] = t.n_prompt_reused;
            d["prompt_ms"] = t.prompt_ms;
            d["prompt_tokens_per_s"] = t.prompt_tps();
            d["generated_tokens"] = t.n_generated;
            d["generation_ms"] = t.gen_ms;
            d["generation_tokens_per_s"] = t.gen_tps();
            return d;
        });
}
