// Shared by the pybind11 translation units of autoglm_gguf._core: one bind_* function per area.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;

void bind_backends(py::module_ & m);
void bind_text(py::module_ & m);
void bind_sampling(py::module_ & m);
void bind_tokenizer(py::module_ & m);
void bind_generate(py::module_ & m);
void bind_image(py::module_ & m);
void bind_prompt(py::module_ & m);

#include "prompt_layout.h"

// Python prompt pieces -> native: each item is a list of token ids, or an image tuple
// (embeddings float32 [grid_h*grid_w, n_embd], grid_h, grid_w, key). The arrays stay referenced
// in `keep` for as long as the pieces are used.
std::vector<autoglm::prompt_piece> pieces_from_python(const py::list & items, uint32_t n_embd, std::vector<py::object> & keep);
void bind_vision(py::module_ & m);
void bind_imatrix(py::module_ & m);

#include "image.h"

// An HxWx3 uint8 numpy array -> rgb_image (one copy); anything else is a ValueError naming it.
autoglm::rgb_image to_rgb_image(const py::array & arr, const char * fn);

// Python truthiness of a callback's result (any object, as `if r:` reads it; not only bool). An
// exception from its __bool__ propagates as py::error_already_set.
inline bool truthy(const py::object & r) {
    const int t = PyObject_IsTrue(r.ptr());
    if (t < 0) throw py::error_already_set();
    return t != 0;
}
