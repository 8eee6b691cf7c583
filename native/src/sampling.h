// Token sampling: pure functions over a logits row plus a seeded RNG object.
// ref: llama.cpp common sampler chain order: penalties -> top-k -> top-p -> min-p -> temperature -> draw.
//
// temperature <= 0 means greedy (argmax after penalties; ties -> lowest id). top_k <= 0 disables top-k;
// top_p >= 1 and min_p <= 0 disable those. Penalties (repeat as in CTRL/llama.cpp: divide positive logits,
// multiply negative ones; frequency/presence as OpenAI) look at the last penalty_last_n tokens of
// `history` (prompt + generated). Invalid values throw autoglm::invalid_argument naming the parameter.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace autoglm {

struct sampling_params {
    float temperature = 0.0f;
    int32_t top_k = 0;
    float top_p = 1.0f;
    float min_p = 0.0f;
    float repeat_penalty = 1.0f;
    float frequency_penalty = 0.0f;
    float presence_penalty = 0.0f;
    int32_t penalty_last_n = 64;
    uint64_t seed = 0;
};

void validate(const sampling_params & p);  // throws invalid_argument

class sampler {
public:
    explicit sampler(const sampling_params & p);
    // Picks the next token from logits[0..n_vocab). `logits` is not modified.
    int32_t sample(const float * logits, int32_t n_vocab, const std::vector<int32_t> & history);
    void reseed(uint64_t seed);
    const sampling_params & params() const { return p_; }

private:
    sampling_params p_;
    std::mt19937_64 rng_;
    std::vector<std::pair<float, int32_t>> cand_;  // scratch: (logit, id)
};

}  // namespace autoglm
