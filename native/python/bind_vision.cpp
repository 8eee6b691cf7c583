// Python view of the vision tower: VisionModel (mmproj GGUF) -> image embeddings.
#include "bind_common.h"
#include "error.h"
#include "image_prompt.h"
#include "text_model.h"
#include "vision_model.h"

void bind_vision(py::module_ & m) {
    py::class_<autoglm::vision_model>(m, "VisionModel")
        .def(py::init([](const std::string & path, int n_threads, bool use_gpu, const std::string & attention,
                         const std::string & matmul_type) {
                 autoglm::vision_params p;
                 p.n_threads = n_threads;
                 p.use_gpu = use_gpu;
                 p.attention = attention;
                 p.matmul_type = matmul_type;
                 py::gil_scoped_release nogil;
                 return std::make_unique<autoglm::vision_model>(path, p);
             }),
             py::arg("path"), py::arg("n_threads") = 0, py::arg("use_gpu") = true, py::arg("attention") = "auto",
             py::arg("matmul_type") = "file",
             "Load an mmproj GGUF (architecture 'clip', projector 'glm4v'). use_gpu: encode on ggml's GPU when there is one.\n"
             "attention: the CPU attention kernel, 'auto' (best available; BF16 when the matrices are), 'ggml'\n"
             "(ggml_flash_attn_ext), 'avx2', 'avx512', 'avx512_bf16'.\n"
             "matmul_type: the type the tower's matrices are held in: 'file' (as stored), 'f32', 'f16', 'bf16', or 'auto'\n"
             "(bf16 where the CPU kernels have AVX512_BF16 and the tower runs on the CPU, else as stored).")
        .def_property_readonly("matmul_type", &autoglm::vision_model::matmul_type,
                               "The type the tower's matrices are held in ('f16', 'bf16', 'q8_0', ...).")
        .def_property_readonly(
            "attention", [](const autoglm::vision_model & vm) { return vm.attention_kernel(); },
            "The attention kernel in use: 'ggml', 'avx2', 'avx512' or 'avx512_bf16'.")
        .def_property_readonly("hparams",
                               [](const autoglm::vision_model & vm) {
                                   const auto & h = vm.hparams();
                                   py::dict d;
                                   d["n_embd"] = h.n_embd;
                                   d["n_layer"] = h.n_layer;
                                   d["n_head"] = h.n_head;
                                   d["n_ff"] = h.n_ff;
                                   d["n_merger_ff"] = h.n_merger_ff;
                                   d["n_out"] = h.n_out;
                                   d["patch_size"] = h.patch_size;
                                   d["merge_size"] = h.merge_size;
                                   d["n_pos"] = h.n_pos;
                                   d["eps"] = h.eps;
                                   d["rope_theta"] = h.rope_theta;
                                   d["image_mean"] = std::vector<float>(h.mean.begin(), h.mean.end());
                                   d["image_std"] = std::vector<float>(h.std.begin(), h.std.end());
                                   d["min_pixels"] = h.min_pixels;
                                   d["max_pixels"] = h.max_pixels;
                                   return d;
                               })
        .def_property_readonly("devices", &autoglm::vision_model::devices)
        .def_property_readonly("weights_device", &autoglm::vision_model::weights_device,
                               "The device holding the tower's weights ('CPU', 'Vulkan0', ...), read off their buffers.")
        .def_property_readonly("weight_bytes", &autoglm::vision_model::weight_bytes)
        .def(
            "compute_bytes",
            [](autoglm::vision_model & vm, int grid_h, int grid_w) {
                py::gil_scoped_release nogil;
                return vm.compute_bytes(grid_h, grid_w);
            },
            py::arg("grid_h"), py::arg("grid_w"),
            "Compute memory in bytes that encoding a grid_h x grid_w-patch image needs (planned, not run).")
        .def(
            "encode",
            [](autoglm::vision_model & vm, py::array patches_any, int grid_h, int grid_w) {
                const auto & h = vm.hparams();
                const py::ssize_t patch_dim = 3 * (py::ssize_t) h.patch_size * h.patch_size;
                if (!py::isinstance<py::array_t<float>>(patches_any)) {
                    throw autoglm::invalid_argument("encode: patches must be float32, got dtype " +
                                                    std::string(py::str(patches_any.dtype())));
                }
                if (patches_any.ndim() != 2 || patches_any.shape(1) != patch_dim ||
                    patches_any.shape(0) != (py::ssize_t) grid_h * grid_w) {
                    std::string shape = "(";
                    for (py::ssize_t i = 0; i < patches_any.ndim(); ++i)
                        shape += (i ? ", " : "") + std::to_string(patches_any.shape(i));
                    throw autoglm::invalid_argument(
                        "encode: patches have shape " + shape + "), expected (grid_h*grid_w, 3*p*p) = (" +
                        std::to_string((int64_t) grid_h * grid_w) + ", " + std::to_string(patch_dim) + ")");
                }
                auto a = py::array_t<float, py::array::c_style>::ensure(patches_any);  // copies only if not C-contiguous
                autoglm::pixel_patches px;
                px.grid_h = grid_h;
                px.grid_w = grid_w;
                px.patch_dim = (int32_t) patch_dim;
                std::vector<float> out;
                {
                    py::gil_scoped_release nogil;
                    px.values.assign(a.data(), a.data() + a.size());
                    out = vm.encode(px);
                }
                auto * heap = new std::vector<float>(std::move(out));
                py::capsule owner(heap, [](void * p) { delete (std::vector<float> *) p; });
                const py::ssize_t n_out = h.n_out, rows = n_out ? (py::ssize_t) (heap->size() / n_out) : 0;
                return py::array_t<float>({rows, n_out}, {n_out * (py::ssize_t) sizeof(float), (py::ssize_t) sizeof(float)},
                                          heap->data(), owner);
            },
            py::arg("patches"), py::arg("grid_h"), py::arg("grid_w"),
            "Embeddings (n_tokens, n_out) float32 of one image: patches (grid_h*grid_w, 3*p*p) float32 in merge-window\n"
            "order, each row one frame's (C, py, px) values (HF pixel_values with the time axis dropped). Rows of the\n"
            "result are the merged (grid_h/m) x (grid_w/m) tokens in raster order. ValueError for a wrong shape.");

    using autoglm::image_embedder;
    py::class_<image_embedder>(m, "ImageEmbedder",
                               "The vision tower plus an LRU cache of embeddings by image content, bounded by "
                               "cache_bytes. Thread-safe.")
        .def(py::init([](autoglm::vision_model & vm, size_t cache_bytes) {
                 return std::make_unique<image_embedder>(vm, cache_bytes);
             }),
             py::arg("vision"), py::arg("cache_bytes"), py::keep_alive<1, 2>())
        .def(
            "embed",
            [](image_embedder & e, const py::array & rgb, int64_t min_pixels, int64_t max_pixels) {
                autoglm::rgb_image img = to_rgb_image(rgb, "ImageEmbedder.embed");
                image_embedder::result r;
                {
                    py::gil_scoped_release nogil;
                    r = e.embed(img, min_pixels, max_pixels);
                }
                // The array views the cached embeddings; the capsule keeps them alive after eviction.
                auto * hold = new std::shared_ptr<const autoglm::embedded_image>(r.image);
                py::capsule owner(hold, [](void * p) { delete (std::shared_ptr<const autoglm::embedded_image> *) p; });
                const py::ssize_t n_out = e.model().hparams().n_out;
                const py::ssize_t rows = (py::ssize_t) r.image->rows * r.image->cols;
                py::array_t<float> embd({rows, n_out}, {n_out * (py::ssize_t) sizeof(float), (py::ssize_t) sizeof(float)},
                                        r.image->embd.data(), owner);
                embd.attr("setflags")(py::arg("write") = false);
                return py::make_tuple(embd, r.image->rows, r.image->cols, r.image->key, r.encode_ms, r.hit);
            },
            py::arg("rgb"), py::arg("min_pixels") = 0, py::arg("max_pixels") = 0,
            "(embeddings (rows*cols, n_out) float32 read-only, rows, cols, key, encode_ms, cache_hit) of an RGB uint8\n"
            "image; min/max_pixels 0 take the mmproj's values. The key is the one the C API computes.")
        .def_property_readonly("hits", &image_embedder::hits)
        .def_property_readonly("misses", &image_embedder::misses)
        .def("clear", &image_embedder::clear);

    m.def(
        "tokenize_around_images",
        [](const autoglm::text_model & tm, const std::string & prompt, size_t n_images) {
            py::gil_scoped_release nogil;
            return autoglm::tokenize_around_images(tm.tok(), prompt, n_images);
        },
        py::arg("model"), py::arg("prompt"), py::arg("n_images"),
        "Token runs around a prompt's image slots: n_images + 1 lists, run i before image i (slot markers kept, "
        "<|image|> left out). ValueError when the prompt's slot count differs.");
}
