// Shared by the pybind11 translation units of autoglm_gguf._core: one bind_* function per area.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;

void bind_text(py::module_ & m);
void bind_sampling(py::module_ & m);
void bind_tokenizer(py::module_ & m);
void bind_generate(py::module_ & m);
void bind_vision(py::module_ & m);
