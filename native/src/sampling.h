// Token sampling: pure functions over a logits row plus a seeded RNG object.
// ref: llama.cpp common sampler chain order: penalties -> top-k -> top-p -> min-p -> temperature -> draw.
// Truncation therefore sees the temperature-1 distribution; temperature only reshapes what is kept.
//
// temperature == 0 means greedy (argmax after penalties; ties -> lowest id; no randomness consumed).
// top_k == 0, top_p == 1 and min_p == 0 disable those. NaN logits count as -inf (never chosen); if some
// logits are +inf, only those tokens remain, equally likely; all NaN/-inf is an error. Every non-greedy
// sample() consumes exactly one 64-bit RNG output, so a seed gives the same token stream on every
// platform and compiler. Penalties (repeat as in CTRL/llama.cpp: divide positive logits, multiply
// negative ones; frequency/presence as OpenAI; each distinct token once, by its count) look at the last
// penalty_last_n tokens of `history` (prompt + generated; -1 = all of it, 0 = off). Invalid values throw
// autoglm::invalid_argument naming the parameter, its value and the allowed range.
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
    // OpenAI/vLLM penalties instead of llama.cpp's window: repeat_penalty over every distinct token of
    // the prompt and the generated text, frequency/presence by counts over the generated tokens only
    // (history[n_prompt:]); penalty_last_n is then not used. What models served by vLLM were tuned with.
    bool openai_penalties = false;
    uint64_t seed = 0;
};

void validate(const sampling_params & p);  // throws invalid_argument

class sampler {
public:
    explicit sampler(const sampling_params & p);
    // Picks the next token from logits[0..n_vocab). `logits` is not modified.
    // `n_prompt`: how many leading history tokens are the prompt (for openai_penalties).
    int32_t sample(const float * logits, int32_t n_vocab, const std::vector<int32_t> & history, size_t n_prompt = 0);
    void reseed(uint64_t seed);
    const sampling_params & params() const { return p_; }

private:
    sampling_params p_;
    std::mt19937_64 rng_;
    struct scored {
        float logit;
        int32_t id;
        double weight;  // exp(logit - max logit)
    };

    std::vector<std::pair<float, int32_t>> cand_;  // scratch: (logit, id)
    std::vector<std::pair<float, int32_t>> top_;   // scratch: top-k heap
    std::vector<int32_t> window_;                  // scratch: the penalty window, sorted
    std::vector<scored> scored_;                   // scratch: top-p selection
    std::vector<double> weights_;                  // scratch: unnormalized final probabilities

    void apply_penalties(const std::vector<int32_t> & history, size_t n_prompt);
    void apply_openai_penalties(const std::vector<int32_t> & history, size_t n_prompt);
    void drop_impossible();
    void top_k_filter();
    void top_p_filter(bool ranked);
    void min_p_filter();
    int32_t draw();
};

}  // namespace autoglm
