#include "prompt_layout.h"

#include <algorithm>

#include "error.h"

namespace autoglm {

// Keys of image cells must never equal a token id (0..2^31) and must differ per row.
static uint64_t image_cell_key(uint64_t hash, uint32_t row) {
    uint64_t x = hash ^ (0x9e3779b97f4a7c15ull * (row + 1));
    x ^= x >> 31;
    return x | (1ull << 63);
}

std::vector<prompt_cell> layout_prompt(const std::vector<prompt_piece> & pieces) {
    std::vector<prompt_cell> cells;
    int32_t st = 0;
    for (uint32_t pi = 0; pi < pieces.size(); ++pi) {
        const prompt_piece & p = pieces[pi];
        if (p.is_image()) {
            if (p.grid_h <= 0 || p.grid_w <= 0) throw invalid_argument("image piece with an empty grid");
            const int32_t next = st + std::max(p.grid_h, p.grid_w);
            for (int32_t k = 0; k < p.grid_h * p.grid_w; ++k) {
                prompt_cell c;
                c.key = image_cell_key(p.key, (uint32_t) k);
                c.pos = {st, st + k / p.grid_w, st + k % p.grid_w};
                c.next_pos = next;
                c.piece = pi;
                c.row = (uint32_t) k;
                cells.push_back(c);
            }
            st = next;
        } else {
            for (uint32_t i = 0; i < p.tokens.size(); ++i, ++st) {
                prompt_cell c;
                c.token = p.tokens[i];
                c.key = (uint64_t) (uint32_t) p.tokens[i];
                c.pos = {st, st, st};
                c.next_pos = st + 1;
                c.piece = pi;
                c.row = i;
                cells.push_back(c);
            }
        }
    }
    return cells;
}

}  // namespace autoglm
