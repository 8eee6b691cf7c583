// Python view of the sampler: SamplingParams and Sampler.
#include <mutex>
#include <sstream>

#include "bind_common.h"
#include "error.h"
#include "sampling.h"

namespace {

// The C++ sampler plus a lock: sample() runs without the GIL, and two Python threads sharing one
// Sampler must not advance its RNG (or its scratch buffers) at the same time.
struct py_sampler {
    explicit py_sampler(const autoglm::sampling_params & p) : s(p) {}
    autoglm::sampler s;
    std::mutex mu;
};

// Takes a read-only buffer view of `logits` (no copy): any 1-D contiguous float32 buffer, e.g. a numpy row.
int32_t sampler_sample(py_sampler & self, const py::buffer & logits, const std::vector<int32_t> & history, size_t n_prompt) {
    py::buffer_info view = logits.request();
    const bool ok = view.format == py::format_descriptor<float>::format() && view.itemsize == sizeof(float) && view.ndim == 1 &&
                    (view.shape[0] <= 1 || view.strides[0] == (py::ssize_t) sizeof(float));
    if (!ok) {
        std::ostringstream msg;
        msg << "Sampler.sample: logits must be a 1-D contiguous float32 array, got format '" << view.format << "' with "
            << view.ndim << " dimension(s)"
            << " (use numpy.ascontiguousarray(row, dtype=numpy.float32))";
        throw autoglm::invalid_argument(msg.str());
    }
    if (view.shape[0] > INT32_MAX) throw autoglm::invalid_argument("Sampler.sample: more than 2^31-1 logits");
    const float * data = static_cast<const float *>(view.ptr);
    const auto n = static_cast<int32_t>(view.shape[0]);
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(self.mu);
    return self.s.sample(data, n, history, n_prompt);
}

std::string params_repr(const autoglm::sampling_params & p) {
    std::ostringstream s;
    s.precision(9);
    s << "SamplingParams(temperature=" << p.temperature << ", top_k=" << p.top_k << ", top_p=" << p.top_p << ", min_p=" << p.min_p
      << ", repeat_penalty=" << p.repeat_penalty << ", frequency_penalty=" << p.frequency_penalty
      << ", presence_penalty=" << p.presence_penalty << ", penalty_last_n=" << p.penalty_last_n << ", seed=" << p.seed << ")";
    return s.str();
}

}  // namespace

void bind_sampling(py::module_ & m) {
    using autoglm::sampling_params;
    const sampling_params d;  // the defaults come from the struct, so the two cannot drift apart
    py::class_<sampling_params>(m, "SamplingParams",
                                "Token sampling settings. Chain: penalties -> top-k -> top-p -> min-p -> "
                                "temperature -> draw;\ntemperature 0 = greedy. Validated on construction and "
                                "again by Sampler (fields are writable).")
        .def(
            py::init([](float temperature, int32_t top_k, float top_p, float min_p, float repeat_penalty, float frequency_penalty,
                        float presence_penalty, int32_t penalty_last_n, uint64_t seed, bool openai_penalties) {
                sampling_params p;
                p.temperature = temperature;
                p.top_k = top_k;
                p.top_p = top_p;
                p.min_p = min_p;
                p.repeat_penalty = repeat_penalty;
                p.frequency_penalty = frequency_penalty;
                p.presence_penalty = presence_penalty;
                p.penalty_last_n = penalty_last_n;
                p.seed = seed;
                p.openai_penalties = openai_penalties;
                autoglm::validate(p);
                return p;
            }),
            py::kw_only(), py::arg("temperature") = d.temperature, py::arg("top_k") = d.top_k, py::arg("top_p") = d.top_p,
            py::arg("min_p") = d.min_p, py::arg("repeat_penalty") = d.repeat_penalty,
            py::arg("frequency_penalty") = d.frequency_penalty, py::arg("presence_penalty") = d.presence_penalty,
            py::arg("penalty_last_n") = d.penalty_last_n, py::arg("seed") = d.seed,
            py::arg("openai_penalties") = d.openai_penalties)
        .def_readwrite("temperature", &sampling_params::temperature)
        .def_readwrite("top_k", &sampling_params::top_k)
        .def_readwrite("top_p", &sampling_params::top_p)
        .def_readwrite("min_p", &sampling_params::min_p)
        .def_readwrite("repeat_penalty", &sampling_params::repeat_penalty)
        .def_readwrite("frequency_penalty", &sampling_params::frequency_penalty)
        .def_readwrite("presence_penalty", &sampling_params::presence_penalty)
        .def_readwrite("penalty_last_n", &sampling_params::penalty_last_n)
        .def_readwrite("seed", &sampling_params::seed)
        .def_readwrite("openai_penalties", &sampling_params::openai_penalties,
                       "OpenAI/vLLM penalties: repeat over prompt + generated, frequency/presence over generated only")
        .def("validate", &autoglm::validate, "Raise ValueError naming the first out-of-range field.")
        .def("__repr__", &params_repr);

    py::class_<py_sampler>(m, "Sampler", "Seeded token sampler (see SamplingParams). Thread-safe.")
        .def(py::init<const sampling_params &>(), py::arg("params"))
        .def("sample", &sampler_sample, py::arg("logits"), py::arg("history"), py::arg("n_prompt") = 0,
             "Next token id from a 1-D float32 logits row (read in place, not copied) and the token history\n"
             "(prompt + generated) the penalties look at; its first n_prompt tokens are the prompt\n"
             "(used by openai_penalties). Releases the GIL.")
        .def(
            "reseed",
            [](py_sampler & self, uint64_t seed) {
                std::lock_guard<std::mutex> lock(self.mu);
                self.s.reseed(seed);
            },
            py::arg("seed"), "Restart the random stream as if constructed with this seed.")
        .def_property_readonly(
            "params",
            [](py_sampler & self) {
                std::lock_guard<std::mutex> lock(self.mu);
                return self.s.params();
            },
            "A copy of the parameters in use.");
}
