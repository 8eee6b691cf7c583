#include "generate.h"

#include <algorithm>
#include <cmath>

#include "error.h"

namespace autoglm {

using clock_type = std::chrono::steady_clock;

static double ms_since(clock_type::time_point t0) {
    return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

double generate_timings::prompt_tps() const {
    const uint32_t n = n_prompt - n_prompt_reused;
    return prompt_ms > 0 ? n / (prompt_ms / 1000.0) : 0.0;
}

double generate_timings::gen_tps() const { return gen_ms > 0 ? n_generated / (gen_ms / 1000.0) : 0.0; }

size_t common_prefix(const std::vector<uint64_t> & cached, const std::vector<prompt_cell> & prompt) {
    size_t n = 0;
    while (n < cached.size() && n < prompt.size() && cached[n] == prompt[n].key) ++n;
    return n;
}

generator::generator(session & s, const tokenizer & tok, const std::vector<int32_t> & prompt, const generate_params & p)
    : generator(s, tok, std::vector<prompt_piece>{prompt_piece{prompt}}, p) {}

generator::generator(session & s, const tokenizer & tok, const std::vector<prompt_piece> & prompt, const generate_params & p)
    : s_(s), tok_(tok), p_(p), sampler_(p.sampling) {
    auto lock = s_.acquire();  // truncate + prefill as one unit
    for (const auto & st : p_.stop) {
        if (st.empty()) throw invalid_argument("stop strings must not be empty");
    }
    const std::vector<prompt_cell> cells = layout_prompt(prompt);
    if (cells.empty()) throw invalid_argument("the prompt is empty");
    if (cells.size() > s_.n_ctx()) {
        throw context_full("the prompt has " + std::to_string(cells.size()) + " tokens, more than n_ctx = " +
                           std::to_string(s_.n_ctx()) + " (create the session with a larger n_ctx)");
    }
    for (const auto & c : cells) {
        if (c.token >= 0) history_.push_back(c.token);  // penalties look at text tokens only
    }
    n_prompt_text_ = history_.size();
    // Reuse the longest cached prefix (text tokens, and identical images at the same place); at
    // least the last prompt cell is evaluated again, because its logits (not kept in the cache)
    // start the generation.
    const size_t reuse = std::min(common_prefix(s_.cache().keys(), cells), cells.size() - 1);
    s_.truncate((uint32_t) reuse);
    t_.n_prompt = (uint32_t) cells.size();
    t_.n_prompt_reused = (uint32_t) reuse;
    const auto t0 = clock_type::now();
    logits_ = s_.eval_cells(cells, reuse, cells.size(), prompt, logits_mode::last);
    t_.prompt_ms = ms_since(t0);
    epoch_ = s_.epoch();
}

size_t generator::held_back_len() const {
    // The longest suffix of pending_ that is a proper prefix of some stop string.
    size_t keep = 0;
    for (const auto & st : p_.stop) {
        for (size_t n = std::min(st.size() - 1, pending_.size()); n > keep; --n) {
            if (pending_.compare(pending_.size() - n, n, st, 0, n) == 0) {
                keep = n;
                break;
            }
        }
    }
    return keep;
}

const float * generator::constrained_logits(int32_t n_vocab) {
    if (!p_.constraint) return logits_.data();
    mask_.assign(((size_t) n_vocab + 31) / 32, 0u);
    p_.constraint->fill_mask(mask_.data(), mask_.size());
    masked_.resize((size_t) n_vocab);
    bool any = false;
    for (int32_t i = 0; i < n_vocab; ++i) {
        const bool allowed = (mask_[(size_t) i >> 5] >> (i & 31)) & 1u;
        masked_[(size_t) i] = allowed ? logits_[(size_t) i] : -INFINITY;
        any |= allowed && !std::isnan(logits_[(size_t) i]) && logits_[(size_t) i] != -INFINITY;
    }
    if (!any) {
        throw invalid_argument("the grammar allows no token the model can produce here (after " +
                               std::to_string(out_ids_.size()) + " generated tokens); check the grammar");
    }
    return masked_.data();
}

bool generator::step(std::string & produced) {
    if (p_.max_tokens >= 0 && (int32_t) out_ids_.size() >= p_.max_tokens) {
        reason_ = finish_reason::length;
        return false;
    }
    const auto t0 = clock_type::now();
    const int32_t n_vocab = (int32_t) s_.model().hparams().n_vocab;
    const int32_t id = sampler_.sample(constrained_logits(n_vocab), n_vocab, history_, n_prompt_text_);
    const bool constraint_done = p_.constraint && !p_.constraint->accept(id);
    const auto & eog = s_.model().eog_ids();
    if (p_.stop_at_eog && std::binary_search(eog.begin(), eog.end(), id)) {
        t_.gen_ms += ms_since(t0);
        reason_ = finish_reason::stop;
        return false;
    }
    out_ids_.push_back(id);
    history_.push_back(id);
    produced = tok_.token_bytes(id);
    t_.n_generated++;
    const bool at_limit = p_.max_tokens >= 0 && (int32_t) out_ids_.size() >= p_.max_tokens;
    if (constraint_done || at_limit || s_.n_past() >= s_.n_ctx()) {
        // Nothing will read this token's logits: finish without the extra decode (it is not cached).
        t_.gen_ms += ms_since(t0);
        reason_ = constraint_done ? finish_reason::stop : finish_reason::length;
        return true;
    }
    logits_ = s_.eval_tokens({id}, logits_mode::last);
    epoch_ = s_.epoch();
    t_.gen_ms += ms_since(t0);
    return true;
}

bool generator::next(std::string & piece) {
    piece.clear();
    if (done_) return false;
    auto lock = s_.acquire();
    if (s_.epoch() != epoch_) {
        throw busy(
            "this generation cannot continue: its session has been used by another generation or evaluation "
            "since, so the cache no longer holds its text; start a new generation");
    }
    while (!done_) {
        std::string produced;
        const bool more = step(produced);
        pending_ += produced;
        // A stop string anywhere in the pending text ends generation there.
        size_t cut = std::string::npos;
        for (const auto & st : p_.stop) cut = std::min(cut, pending_.find(st));
        if (cut != std::string::npos) {
            piece = pending_.substr(0, cut);
            pending_.clear();
            reason_ = finish_reason::stop;
            done_ = true;
            return !piece.empty();
        }
        if (!more || reason_ != finish_reason::none) done_ = true;
        // Emit what is certainly final: complete UTF-8, and not possibly the start of a stop string.
        const size_t hold = done_ ? 0 : held_back_len();
        size_t emit = pending_.size() - hold;
        if (!done_) emit = utf8_complete_prefix(std::string_view(pending_).substr(0, emit));
        if (emit > 0) {
            piece = pending_.substr(0, emit);
            pending_.erase(0, emit);
            return true;
        }
    }
    return false;
}

}  // namespace autoglm
