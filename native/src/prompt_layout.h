// A prompt as a sequence of pieces (text tokens, or one image's embeddings), laid out into KV-cache
// cells with their 3-stream M-RoPE positions (spec D.4, ref: transformers Glm4vModel.get_rope_index):
//   text token:            t = h = w = st, st += 1
//   image token k (r, c):  t = st, h = st + r, w = st + c   (r = k / grid_w, c = k % grid_w)
//                          and after the image st += max(grid_h, grid_w)
// where st starts at 0. Each cell also gets a key for prefix reuse: the token id for text, and
// (image content hash, row) for image cells, so a repeated image reuses its cached KV.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace autoglm {

struct prompt_piece {
    std::vector<int32_t> tokens;  // text (empty for an image)
    const float * embd = nullptr; // image rows [grid_h * grid_w, n_embd], owned by the caller
    int32_t grid_h = 0;           // merged grid (tokens per column / row)
    int32_t grid_w = 0;
    uint64_t key = 0;             // image content hash (never 0 for an image)
    bool is_image() const { return embd != nullptr; }
    uint32_t size() const { return is_image() ? (uint32_t) (grid_h * grid_w) : (uint32_t) tokens.size(); }
};

struct prompt_cell {
    int32_t token = -1;                     // -1 for an image cell
    uint64_t key = 0;                       // token id, or mix(image hash, row)
    std::array<int32_t, 3> pos{0, 0, 0};    // t, h, w
    int32_t next_pos = 0;                   // the text position that follows this cell
    uint32_t piece = 0, row = 0;            // where it came from
};

std::vector<prompt_cell> layout_prompt(const std::vector<prompt_piece> & pieces);

}  // namespace autoglm
