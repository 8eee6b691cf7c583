// Image preprocessing for the GLM-4V vision tower, following transformers (not llama.cpp) where the
// two differ: HF smart_resize (factor patch*merge, a still image counts as 2 frames, round half to
// even), a Pillow-exact BICUBIC stretch to the target size (antialiased when downscaling; no
// padding), normalization with the mmproj's mean/std, and patches in merge-window order.
// ref: transformers Glm4vImageProcessor(Pil) smart_resize / _preprocess; spec sections C.1-C.3.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace autoglm {

struct rgb_image {           // 8-bit RGB, tightly packed rows (stride = 3 * width)
    int32_t width = 0;
    int32_t height = 0;
    std::vector<uint8_t> data;
};

struct resize_params {
    int32_t patch_size = 14;
    int32_t merge_size = 2;
    int32_t temporal_patch_size = 2;  // the "2 frames" of a still image in HF's pixel budget
    int64_t min_pixels = 12544;       // in HF's units (2-frame budget), e.g. preprocessor_config size.shortest_edge
    int64_t max_pixels = 9633792;     // size.longest_edge; AutoGLM serves with 5,000,000
};

// HF smart_resize: (height, width) of the resized image, multiples of patch*merge.
// Throws invalid_argument for an aspect ratio above 200 or an empty image.
std::array<int32_t, 2> smart_resize(int32_t height, int32_t width, const resize_params & p);

// Pillow Image.resize(size, BICUBIC) on 8-bit RGB (exact up to +-1 on uint8).
rgb_image resize_bicubic(const rgb_image & src, int32_t width, int32_t height);

struct pixel_patches {
    int32_t grid_h = 0;          // patches per column (resized height / patch)
    int32_t grid_w = 0;          // patches per row
    int32_t patch_dim = 0;       // 3 * patch * patch (one frame; channels, then rows, then columns)
    std::vector<float> values;   // [grid_h * grid_w, patch_dim], patches in merge-window order (spec C.3)
};

// resize (if needed) -> normalize ((x/255 - mean) / std) -> patches in merge-window order.
pixel_patches preprocess(const rgb_image & img, const resize_params & p, const std::array<float, 3> & mean,
                         const std::array<float, 3> & std);

}  // namespace autoglm
