// Prompts with images, in one place for the C API and Python: an embedding cache keyed by image
// content (so a screenshot seen again is neither re-encoded nor, at the same place, re-evaluated),
// and the split of a prompt's text at its image slots.
// ref: spec D.3 (image slots: <|begin_of_image|><|image|><|end_of_image|>; the <|image|> token is
// replaced by the image's rows, its begin/end markers stay text).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "image.h"
#include "tokenizer.h"
#include "vision_model.h"

namespace autoglm {

inline constexpr const char * image_slot_text = "<|begin_of_image|><|image|><|end_of_image|>";

// Content key of pixels at a resize budget: the same pixels at another budget are other tokens.
// Never 0 (0 marks "not an image" in cache-cell keys).
uint64_t image_content_key(const rgb_image & im, const resize_params & rp);

struct embedded_image {
    uint64_t key = 0;
    std::vector<float> embd;  // [rows * cols, n_out], raster order of the merged grid
    int32_t rows = 0, cols = 0;
};

// The vision tower plus an LRU cache of embeddings bounded by bytes (the newest entry is kept even
// above the budget: its caller is about to use it). Thread-safe; entries are shared, so an evicted one
// stays valid for whoever still holds it.
class image_embedder {
public:
    image_embedder(vision_model & vm, size_t cache_bytes) : vm_(vm), cap_(cache_bytes) {}

    struct result {
        std::shared_ptr<const embedded_image> image;
        double encode_ms = 0.0;  // 0 on a cache hit
        bool hit = false;
    };
    // min/max_pixels 0: the mmproj file's values.
    result embed(const rgb_image & rgb, int64_t min_pixels = 0, int64_t max_pixels = 0);

    uint64_t hits() const;
    uint64_t misses() const;
    void clear();
    vision_model & model() const { return vm_; }

private:
    vision_model & vm_;
    size_t cap_;
    mutable std::mutex mu_;
    std::list<std::shared_ptr<const embedded_image>> lru_;  // most recent first
    size_t bytes_ = 0;
    uint64_t hits_ = 0, misses_ = 0;
};

// The tokenized text around a prompt's n_images image slots: n_images + 1 runs, run i before image i
// (slot markers included, the <|image|> token left out). Throws invalid_argument when the prompt's
// slot count is not n_images.
std::vector<std::vector<int32_t>> tokenize_around_images(const tokenizer & tok, const std::string & prompt, size_t n_images);

}  // namespace autoglm
