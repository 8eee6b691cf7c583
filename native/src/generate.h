// Pull-style generation over a session: prefill a prompt (reusing the cached common prefix), then
// next() yields text pieces until an end-of-generation token, a stop string or max_tokens.
// ref: transformers GenerationMixin.generate (greedy when temperature == 0), llama.cpp's stop handling.
//
// Pieces are always complete UTF-8; text that might be the start of a stop string is held back until
// it is known not to be one, and the stop string itself is never emitted.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "prompt_layout.h"
#include "sampling.h"
#include "session.h"
#include "tokenizer.h"

namespace autoglm {

// Which tokens may come next (a grammar engine such as llguidance sits behind it). Called from the
// generating thread, once per token: fill_mask sets bit (id % 32) of words[id / 32] for every allowed
// id (the words arrive zeroed); accept is told the chosen id and returns false when the constraint is
// complete (generation then ends after that token, finish reason stop). Either may throw to stop.
struct token_constraint {
    virtual ~token_constraint() = default;
    virtual void fill_mask(uint32_t * words, size_t n_words) = 0;
    virtual bool accept(int32_t id) = 0;
};

struct generate_params {
    sampling_params sampling;
    int32_t max_tokens = 256;           // < 0: until the context is full
    std::vector<std::string> stop;      // stop strings (not emitted)
    bool stop_at_eog = true;            // stop at the model's end-of-generation ids
    std::shared_ptr<token_constraint> constraint;  // optional: only tokens it allows are sampled
};

struct generate_timings {
    uint32_t n_prompt = 0;         // prompt tokens
    uint32_t n_prompt_reused = 0;  // of those, taken from the cache (prefix reuse)
    uint32_t n_generated = 0;
    double prompt_ms = 0.0;        // time to evaluate the non-reused prompt tokens
    double gen_ms = 0.0;           // time spent generating (sampling + decoding)
    double prompt_tps() const;
    double gen_tps() const;
};

enum class finish_reason { none, stop, length };

class generator {
public:
    generator(session & s, const tokenizer & tok, const std::vector<int32_t> & prompt, const generate_params & p);
    // A prompt of text and image pieces (image embeddings must outlive the constructor only).
    generator(session & s, const tokenizer & tok, const std::vector<prompt_piece> & prompt, const generate_params & p);

    // Next piece of text; false when generation has finished (see reason()).
    bool next(std::string & piece);
    finish_reason reason() const { return reason_; }
    const generate_timings & timings() const { return t_; }
    const std::vector<int32_t> & generated() const { return out_ids_; }

private:
    bool step(std::string & produced);  // one token: sample, decode, account; false when finished
    const float * constrained_logits(int32_t n_vocab);  // logits_, or a masked copy under a constraint
    size_t held_back_len() const;       // bytes at the end of pending_ that could start a stop string

    session & s_;
    const tokenizer & tok_;
    generate_params p_;
    sampler sampler_;
    std::vector<float> logits_;          // logits of the last evaluated token
    std::vector<uint32_t> mask_;         // scratch: the constraint's allowed-token bits
    std::vector<float> masked_;          // scratch: logits_ with disallowed tokens at -inf
    std::vector<int32_t> history_;       // prompt + generated (for penalties)
    size_t n_prompt_text_ = 0;           // of which the prompt's text tokens
    std::vector<int32_t> out_ids_;
    std::string pending_;                // decoded but not yet emitted bytes
    finish_reason reason_ = finish_reason::none;
    bool done_ = false;
    generate_timings t_;
    uint64_t epoch_ = 0;                 // the session's epoch after this generation's last evaluation
};

// Number of leading cells that `prompt` shares with what the session has cached (by cell key).
size_t common_prefix(const std::vector<uint64_t> & cached, const std::vector<prompt_cell> & prompt);

}  // namespace autoglm
