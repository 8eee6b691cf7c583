#include "image_prompt.h"

#include <chrono>
#include <cstring>

#include "error.h"

namespace autoglm {

uint64_t image_content_key(const rgb_image & im, const resize_params & rp) {
    uint64_t h = 0x243F6A8885A308D3ull ^ ((uint64_t) im.width << 32 | (uint32_t) im.height);
    auto mix = [&h](uint64_t w) {
        h = (h ^ w) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
    };
    mix((uint64_t) rp.min_pixels);
    mix((uint64_t) rp.max_pixels);
    const uint8_t * p = im.data.data();
    size_t n = im.data.size(), i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        mix(w);
    }
    uint64_t tail = 0;
    std::memcpy(&tail, p + i, n - i);
    mix(tail ^ (n - i));
    return h | 1;
}

image_embedder::result image_embedder::embed(const rgb_image & rgb, int64_t min_pixels, int64_t max_pixels) {
    const resize_params rp = vm_.resize(min_pixels, max_pixels);
    const uint64_t key = image_content_key(rgb, rp);
    std::lock_guard<std::mutex> lock(mu_);  // the tower runs one image at a time anyway
    for (auto it = lru_.begin(); it != lru_.end(); ++it) {
        if ((*it)->key == key) {
            lru_.splice(lru_.begin(), lru_, it);
            ++hits_;
            return {lru_.front(), 0.0, true};
        }
    }
    ++misses_;
    const auto t0 = std::chrono::steady_clock::now();
    const vision_hparams & hp = vm_.hparams();
    const pixel_patches px = preprocess(rgb, rp, hp.mean, hp.std);
    auto img = std::make_shared<embedded_image>();
    img->key = key;
    img->embd = vm_.encode(px);
    img->rows = px.grid_h / (int32_t) hp.merge_size;
    img->cols = px.grid_w / (int32_t) hp.merge_size;
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    lru_.push_front(img);
    bytes_ += img->embd.size() * sizeof(float);
    while (lru_.size() > 1 && bytes_ > cap_) {
        bytes_ -= lru_.back()->embd.size() * sizeof(float);
        lru_.pop_back();
    }
    return {lru_.front(), ms, false};
}

uint64_t image_embedder::hits() const {
    std::lock_guard<std::mutex> lock(mu_);
    return hits_;
}

uint64_t image_embedder::misses() const {
    std::lock_guard<std::mutex> lock(mu_);
    return misses_;
}

void image_embedder::clear() {
    std::lock_guard<std::mutex> lock(mu_);
    lru_.clear();
    bytes_ = 0;
}

std::vector<std::vector<int32_t>> tokenize_around_images(const tokenizer & tok, const std::string & prompt, size_t n_images) {
    static const std::string slot = image_slot_text;
    static const std::string begin = "<|begin_of_image|>", end = "<|end_of_image|>";
    std::vector<std::string> parts;
    for (size_t pos = 0;;) {
        const size_t at = prompt.find(slot, pos);
        if (at == std::string::npos) {
            parts.push_back(prompt.substr(pos));
            break;
        }
        parts.push_back(prompt.substr(pos, at - pos));
        pos = at + slot.size();
    }
    const size_t n_slots = parts.size() - 1;
    if (n_slots != n_images) {
        throw invalid_argument("the prompt has " + std::to_string(n_slots) + " image slot(s) (" + slot + ") but " +
                               std::to_string(n_images) +
                               " image(s) were given; they must match (the chat template "
                               "writes one slot per image part)");
    }
    std::vector<std::vector<int32_t>> runs;
    for (size_t i = 0; i <= n_slots; ++i) {
        const std::string text = (i > 0 ? end : std::string()) + parts[i] + (i < n_slots ? begin : std::string());
        runs.push_back(tok.encode(text, true));
    }
    return runs;
}

}  // namespace autoglm
