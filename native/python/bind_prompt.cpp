// Prompt pieces from Python, and the position-layout inspection hook.
#include "bind_common.h"
#include "error.h"

std::vector<autoglm::prompt_piece> pieces_from_python(const py::list & items, uint32_t n_embd, std::vector<py::object> & keep) {
    std::vector<autoglm::prompt_piece> out;
    for (size_t i = 0; i < items.size(); ++i) {
        py::handle it = items[i];
        autoglm::prompt_piece p;
        if (py::isinstance<py::tuple>(it)) {
            auto t = it.cast<py::tuple>();
            if (t.size() != 4) throw autoglm::invalid_argument("image piece must be (embeddings, grid_h, grid_w, key)");
            auto arr = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(t[0]);
            if (!arr)
                throw autoglm::invalid_argument("image piece " + std::to_string(i) + ": embeddings must be a float32 array");
            p.grid_h = t[1].cast<int32_t>();
            p.grid_w = t[2].cast<int32_t>();
            p.key = t[3].cast<uint64_t>() | 1;  // never 0: 0 marks "no image"
            if (arr.ndim() != 2 || arr.shape(1) != (py::ssize_t) n_embd || arr.shape(0) != (py::ssize_t) p.grid_h * p.grid_w) {
                throw autoglm::invalid_argument("image piece " + std::to_string(i) + ": embeddings must have shape (" +
                                                std::to_string(p.grid_h * p.grid_w) + ", " + std::to_string(n_embd) + ")");
            }
            p.embd = arr.data();
            keep.push_back(arr);
        } else {
            p.tokens = it.cast<std::vector<int32_t>>();
        }
        out.push_back(std::move(p));
    }
    return out;
}

void bind_prompt(py::module_ & m) {
    m.def(
        "layout_prompt",
        [](const py::list & items, uint32_t n_embd) {
            std::vector<py::object> keep;
            const auto pieces = pieces_from_python(items, n_embd, keep);
            py::list out;
            for (const auto & c : autoglm::layout_prompt(pieces)) {
                out.append(py::make_tuple(c.token, c.pos[0], c.pos[1], c.pos[2]));
            }
            return out;
        },
        py::arg("pieces"), py::arg("n_embd"),
        "(token or -1, t, h, w) for every cell of a prompt of pieces: the M-RoPE positions the model sees.");
}
