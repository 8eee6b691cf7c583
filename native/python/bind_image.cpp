// Python view of the image preprocessing (image.h): smart_resize, resize_bicubic, preprocess_image.
// The same C++ code serves the C API, so Python and C callers get identical pixels.
#include <sstream>

#include "bind_common.h"
#include "error.h"
#include "image.h"

// An HxWx3 uint8 numpy array -> rgb_image (one copy into tightly packed rows). Anything else is a
// ValueError naming what was received: converting silently (floats, RGBA) would hide caller bugs;
// autoglm_gguf.images.load_image is the forgiving entry point.
autoglm::rgb_image to_rgb_image(const py::array & arr, const char * fn) {
    if (!py::isinstance<py::array_t<uint8_t>>(arr) || arr.ndim() != 3 || arr.shape(2) != 3) {
        std::ostringstream msg;
        msg << fn << ": expected a uint8 array of shape (height, width, 3), got dtype " << std::string(py::str(arr.dtype()))
            << " and shape (";
        for (py::ssize_t i = 0; i < arr.ndim(); i++) msg << (i ? ", " : "") << arr.shape(i);
        msg << ") (autoglm_gguf.images.load_image converts files, PIL images and other arrays)";
        throw autoglm::invalid_argument(msg.str());
    }
    if (arr.shape(0) > INT32_MAX || arr.shape(1) > INT32_MAX) {
        throw autoglm::invalid_argument(std::string(fn) + ": image dimensions must be below 2^31");
    }
    auto c = py::array_t<uint8_t, py::array::c_style>::ensure(arr);  // copies only a strided view
    autoglm::rgb_image img;
    img.height = (int32_t) arr.shape(0);
    img.width = (int32_t) arr.shape(1);
    img.data.assign(c.data(), c.data() + c.size());
    return img;
}

namespace {

// Wraps the vector's memory in a numpy array without copying (the capsule owns it).
template <typename T>
py::array_t<T> owning_array(std::vector<T> && v, std::vector<py::ssize_t> shape) {
    auto * heap = new std::vector<T>(std::move(v));
    py::capsule owner(heap, [](void * p) { delete (std::vector<T> *) p; });
    return py::array_t<T>(shape, heap->data(), owner);
}

autoglm::resize_params make_params(int32_t patch_size, int32_t merge_size, int32_t temporal_patch_size, int64_t min_pixels,
                                   int64_t max_pixels) {
    autoglm::resize_params p;
    p.patch_size = patch_size;
    p.merge_size = merge_size;
    p.temporal_patch_size = temporal_patch_size;
    p.min_pixels = min_pixels;
    p.max_pixels = max_pixels;
    return p;
}

}  // namespace

void bind_image(py::module_ & m) {
    const autoglm::resize_params d;  // defaults from the struct, so the two cannot drift apart

    m.def(
        "smart_resize",
        [](int32_t height, int32_t width, int32_t patch_size, int32_t merge_size, int32_t temporal_patch_size, int64_t min_pixels,
           int64_t max_pixels) {
            const auto p = make_params(patch_size, merge_size, temporal_patch_size, min_pixels, max_pixels);
            const auto hw = autoglm::smart_resize(height, width, p);
            return py::make_tuple(hw[0], hw[1]);
        },
        py::arg("height"), py::arg("width"), py::arg("patch_size") = d.patch_size, py::arg("merge_size") = d.merge_size,
        py::arg("temporal_patch_size") = d.temporal_patch_size, py::arg("min_pixels") = d.min_pixels,
        py::arg("max_pixels") = d.max_pixels,
        "(height, width) after transformers' GLM-4V smart_resize: multiples of patch_size * merge_size, pixel\n"
        "budget [min_pixels, max_pixels] counted over temporal_patch_size frames (a still image counts twice).\n"
        "Raises ValueError for an aspect ratio above 200 or an empty image.");

    m.def(
        "resize_bicubic",
        [](const py::array & arr, int32_t width, int32_t height) {
            autoglm::rgb_image src = to_rgb_image(arr, "resize_bicubic");
            autoglm::rgb_image out;
            {
                py::gil_scoped_release nogil;
                out = autoglm::resize_bicubic(src, width, height);
            }
            return owning_array(std::move(out.data), {out.height, out.width, 3});
        },
        py::arg("arr"), py::arg("width"), py::arg("height"),
        "Pillow's Image.resize((width, height), Image.BICUBIC) of a uint8 (H, W, 3) array; returns\n"
        "uint8 (height, width, 3).");

    using rgb_f = std::array<float, 3>;
    m.def(
        "preprocess_image",
        [](const py::array & arr, const rgb_f & mean, const rgb_f & std, int32_t patch_size, int32_t merge_size,
           int32_t temporal_patch_size, int64_t min_pixels, int64_t max_pixels) {
            autoglm::rgb_image src = to_rgb_image(arr, "preprocess_image");
            const auto p = make_params(patch_size, merge_size, temporal_patch_size, min_pixels, max_pixels);
            autoglm::pixel_patches out;
            {
                py::gil_scoped_release nogil;
                out = autoglm::preprocess(src, p, mean, std);
            }
            const py::ssize_t n = (py::ssize_t) out.grid_h * out.grid_w;
            return py::make_tuple(owning_array(std::move(out.values), {n, (py::ssize_t) out.patch_dim}), out.grid_h, out.grid_w);
        },
        py::arg("arr"), py::arg("mean"), py::arg("std"), py::arg("patch_size") = d.patch_size,
        py::arg("merge_size") = d.merge_size, py::arg("temporal_patch_size") = d.temporal_patch_size,
        py::arg("min_pixels") = d.min_pixels, py::arg("max_pixels") = d.max_pixels,
        "smart_resize + resize_bicubic (when the size changes) + (x/255 - mean) / std of a uint8 (H, W, 3)\n"
        "array. Returns (float32 [grid_h * grid_w, 3 * patch_size**2], grid_h, grid_w): one frame per patch\n"
        "(channel, row, column), patches in merge-window order (HF's pixel_values rows hold the frame twice).");
}
