// Implementation of sampling.h.
//
// Chain (as llama.cpp's common default, minus the samplers we do not offer):
//   penalties -> [greedy: argmax] -> top-k -> top-p -> min-p -> temperature -> draw.
// Truncating before the temperature keeps the kept set independent of the temperature, so a hot
// temperature cannot admit tail tokens that top-p/min-p were meant to cut; it also means the same
// parameters give the same distribution as llama.cpp.
//
// Reproducibility: the candidates are either in id order (no top-k) or in rank order, a strict total
// order (higher logit first, then lower id), so the kept set and the order of the cumulative scan do
// not depend on the standard library's sort or selection algorithms. The uniform number comes straight
// from std::mt19937_64's raw output, which the standard fixes bit for bit (std::uniform_real_distribution
// and std::discrete_distribution are implementation-defined). What remains platform-dependent is
// std::exp's last bit, which can only flip a draw (or a top-p cut) sitting within ~1e-16 of a boundary.
//
// Cost at n_vocab = 151552 is dominated by one double exp per candidate (~0.75 ms); top-k and top-p
// avoid sorting the vocabulary (a full sort alone is ~11 ms).
#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "error.h"

namespace autoglm {
namespace {

using cand = std::pair<float, int32_t>;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

struct ranks_before {
    bool operator()(const cand & a, const cand & b) const {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    }
};

template <typename T>
std::string show(T v) {
    std::ostringstream s;
    s.precision(9);
    s << v;
    return s.str();
}

[[noreturn]] void reject(const char * name, const std::string & value, const char * allowed) {
    throw invalid_argument(std::string("sampling parameter ") + name + " = " + value + " is out of range: expected " + allowed);
}

// 53 random bits -> a double in [0, 1), exactly representable, identical everywhere.
double uniform01(std::mt19937_64 & rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace

void validate(const sampling_params & p) {
    if (!(std::isfinite(p.temperature) && p.temperature >= 0.0f))
        reject("temperature", show(p.temperature), "a finite value >= 0 (0 = greedy)");
    if (p.top_k < 0) reject("top_k", show(p.top_k), "an integer >= 0 (0 = disabled)");
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) reject("top_p", show(p.top_p), "0 < top_p <= 1 (1 = disabled)");
    if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) reject("min_p", show(p.min_p), "0 <= min_p <= 1 (0 = disabled)");
    if (!(std::isfinite(p.repeat_penalty) && p.repeat_penalty > 0.0f))
        reject("repeat_penalty", show(p.repeat_penalty), "a finite value > 0 (1 = disabled)");
    if (!std::isfinite(p.frequency_penalty))
        reject("frequency_penalty", show(p.frequency_penalty), "a finite value (0 = disabled)");
    if (!std::isfinite(p.presence_penalty)) reject("presence_penalty", show(p.presence_penalty), "a finite value (0 = disabled)");
    if (p.penalty_last_n < -1)
        reject("penalty_last_n", show(p.penalty_last_n), "an integer >= -1 (-1 = whole history, 0 = disabled)");
}

sampler::sampler(const sampling_params & p) : p_(p), rng_(p.seed) { validate(p_); }

void sampler::reseed(uint64_t seed) {
    p_.seed = seed;
    rng_.seed(seed);
}

// cand_ is still in id order here, so cand_[id] is token id. Each distinct token in the window is
// penalized once, by its count, exactly like llama.cpp: repeat first, then frequency and presence.
void sampler::apply_penalties(const std::vector<int32_t> & history, size_t n_prompt) {
    if (p_.repeat_penalty == 1.0f && p_.frequency_penalty == 0.0f && p_.presence_penalty == 0.0f) return;
    if (p_.openai_penalties) return apply_openai_penalties(history, n_prompt);
    if (p_.penalty_last_n == 0) return;
    const size_t w = p_.penalty_last_n < 0 ? history.size() : std::min(history.size(), static_cast<size_t>(p_.penalty_last_n));
    // Sorting the window groups equal ids into runs: counting without a hash map, in O(w log w).
    window_.assign(history.end() - static_cast<std::ptrdiff_t>(w), history.end());
    std::sort(window_.begin(), window_.end());
    for (size_t i = 0; i < window_.size();) {
        const int32_t id = window_[i];
        size_t j = i;
        while (j < window_.size() && window_[j] == id) ++j;
        const float count = static_cast<float>(j - i);
        float & l = cand_[static_cast<size_t>(id)].first;
        l = l <= 0.0f ? l * p_.repeat_penalty : l / p_.repeat_penalty;
        l -= count * p_.frequency_penalty + p_.presence_penalty;
        i = j;
    }
}

// ref: vLLM's apply_penalties: repetition over prompt + output tokens first, then
// logit -= frequency_penalty * count_in_output + presence_penalty * (count_in_output > 0).
void sampler::apply_openai_penalties(const std::vector<int32_t> & history, size_t n_prompt) {
    n_prompt = std::min(n_prompt, history.size());
    if (p_.repeat_penalty != 1.0f) {
        window_.assign(history.begin(), history.end());
        std::sort(window_.begin(), window_.end());
        window_.erase(std::unique(window_.begin(), window_.end()), window_.end());
        for (const int32_t id : window_) {
            float & l = cand_[static_cast<size_t>(id)].first;
            l = l <= 0.0f ? l * p_.repeat_penalty : l / p_.repeat_penalty;
        }
    }
    if (p_.frequency_penalty == 0.0f && p_.presence_penalty == 0.0f) return;
    window_.assign(history.begin() + static_cast<std::ptrdiff_t>(n_prompt), history.end());
    std::sort(window_.begin(), window_.end());
    for (size_t i = 0; i < window_.size();) {
        const int32_t id = window_[i];
        size_t j = i;
        while (j < window_.size() && window_[j] == id) ++j;
        cand_[static_cast<size_t>(id)].first -= static_cast<float>(j - i) * p_.frequency_penalty + p_.presence_penalty;
        i = j;
    }
}

// Removes tokens that can never be drawn (-inf, which includes NaN) and resolves +inf: a softmax
// over +inf is NaN, while its limit gives all the mass to the +inf tokens, equally.
void sampler::drop_impossible() {
    bool any_pos_inf = false;
    for (const cand & c : cand_) any_pos_inf |= c.first == kPosInf;
    if (any_pos_inf) {
        cand_.erase(std::remove_if(cand_.begin(), cand_.end(), [](const cand & c) { return c.first != kPosInf; }), cand_.end());
        for (cand & c : cand_) c.first = 0.0f;
        return;
    }
    cand_.erase(std::remove_if(cand_.begin(), cand_.end(), [](const cand & c) { return c.first == kNegInf; }), cand_.end());
}

// Keeps the top_k best in rank order. For small k, one pass with a k-element heap whose front is
// the worst kept: after the first few hundred candidates nearly every other is rejected by a single
// comparison (measured ~10x faster than std::nth_element on 151552 logits). For large k, selection.
void sampler::top_k_filter() {
    const size_t k = static_cast<size_t>(p_.top_k);
    const ranks_before before;
    if (k * 8 <= cand_.size()) {
        top_.assign(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(k));
        std::make_heap(top_.begin(), top_.end(), before);
        for (size_t i = k; i < cand_.size(); ++i) {
            if (before(cand_[i], top_.front())) {
                std::pop_heap(top_.begin(), top_.end(), before);
                top_.back() = cand_[i];
                std::push_heap(top_.begin(), top_.end(), before);
            }
        }
        std::sort(top_.begin(), top_.end(), before);
        cand_.assign(top_.begin(), top_.end());  // assign, not swap: cand_ keeps its full-vocabulary capacity
    } else {
        std::nth_element(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(k - 1), cand_.end(), before);
        cand_.resize(k);
        std::sort(cand_.begin(), cand_.end(), before);
    }
}

// Keeps the smallest rank-ordered prefix whose probability (softmax at temperature 1) reaches top_p,
// at least one token. Without top-k the candidates are unranked; instead of sorting the vocabulary
// (~11 ms for 151552, and a flat distribution needs most of it) we find the boundary token with a
// quickselect that carries the probability mass along (expected O(n)), then filter in id order.
void sampler::top_p_filter(bool ranked) {
    float max_logit = kNegInf;
    for (const cand & c : cand_) max_logit = std::max(max_logit, c.first);
    scored_.resize(cand_.size());
    double sum = 0.0;
    for (size_t i = 0; i < cand_.size(); ++i) {
        const double w = std::exp(static_cast<double>(cand_[i].first) - max_logit);
        scored_[i] = {cand_[i].first, cand_[i].second, w};
        sum += w;
    }
    const double target = static_cast<double>(p_.top_p) * sum;  // cum / sum >= top_p, without dividing

    if (ranked) {
        double cum = 0.0;
        for (size_t i = 0; i < scored_.size(); ++i) {
            cum += scored_[i].weight;
            if (cum >= target) {
                cand_.resize(i + 1);
                return;
            }
        }
        return;  // rounding kept cum just below a top_p near 1: everything stays
    }

    const auto before = [](const scored & a, const scored & b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    };
    // Invariant: the boundary lies in scored_[lo, hi), everything ranked before that range sits in
    // front of it with total weight `above` < target.
    size_t lo = 0, hi = scored_.size();
    double above = 0.0;
    const scored * boundary = nullptr;
    constexpr size_t kSortBelow = 32;
    while (!boundary && hi - lo > kSortBelow) {
        const scored & a = scored_[lo];
        const scored & b = scored_[lo + (hi - lo) / 2];
        const scored & c = scored_[hi - 1];
        const scored pivot =
            before(a, b) ? (before(b, c) ? b : (before(a, c) ? c : a)) : (before(a, c) ? a : (before(b, c) ? c : b));
        // Hand-written partition (not std::partition) so the arrangement, hence the summation order, is
        // the same with every standard library.
        size_t m = lo;
        double mass = 0.0;
        for (size_t i = lo; i < hi; ++i) {
            if (before(scored_[i], pivot)) {
                mass += scored_[i].weight;
                std::swap(scored_[i], scored_[m++]);
            }
        }
        if (above + mass >= target) {
            hi = m;  // m > lo here, because above < target
            continue;
        }
        above += mass;
        size_t at = m;  // the pivot ranks first in [m, hi): bring it to m
        while (scored_[at].id != pivot.id) ++at;
        std::swap(scored_[at], scored_[m]);
        above += scored_[m].weight;
        if (above >= target) boundary = &scored_[m];
        lo = m + 1;
    }
    if (!boundary) {
        std::sort(scored_.begin() + static_cast<std::ptrdiff_t>(lo), scored_.begin() + static_cast<std::ptrdiff_t>(hi), before);
        for (size_t i = lo; i < hi && !boundary; ++i) {
            above += scored_[i].weight;
            if (above >= target) boundary = &scored_[i];
        }
        if (!boundary) return;  // rounding kept the total just below a top_p near 1: everything stays
    }
    const cand last{boundary->logit, boundary->id};
    cand_.erase(std::remove_if(cand_.begin(), cand_.end(), [&last](const cand & c) { return ranks_before()(last, c); }),
                cand_.end());
}

// Keeps tokens with p >= min_p * p_max, i.e. logit >= max_logit + log(min_p); the maximum always
// qualifies. remove_if is stable, so ranked or id order survives.
void sampler::min_p_filter() {
    float max_logit = kNegInf;
    for (const cand & c : cand_) max_logit = std::max(max_logit, c.first);
    const double threshold = static_cast<double>(max_logit) + std::log(static_cast<double>(p_.min_p));
    cand_.erase(std::remove_if(cand_.begin(), cand_.end(),
                               [threshold](const cand & c) { return static_cast<double>(c.first) < threshold; }),
                cand_.end());
}

// Softmax(logit / temperature) over the survivors, then inverse-CDF with one uniform draw.
int32_t sampler::draw() {
    const double u = uniform01(rng_);  // always exactly one draw, even for a single candidate
    float max_logit = kNegInf;
    for (const cand & c : cand_) max_logit = std::max(max_logit, c.first);
    const double inv_t = 1.0 / static_cast<double>(p_.temperature);
    weights_.resize(cand_.size());
    double sum = 0.0;
    for (size_t i = 0; i < cand_.size(); ++i) {
        // d == 0 is special-cased: for a subnormal temperature inv_t is inf and 0 * inf would be NaN.
        const double d = static_cast<double>(cand_[i].first) - max_logit;
        weights_[i] = d == 0.0 ? 1.0 : std::exp(d * inv_t);
        sum += weights_[i];
    }
    // Strict '>' so a token whose weight underflowed to 0 can never be picked.
    const double target = u * sum;
    double cum = 0.0;
    size_t last_positive = 0;
    for (size_t i = 0; i < cand_.size(); ++i) {
        cum += weights_[i];
        if (weights_[i] > 0.0) last_positive = i;
        if (cum > target) return cand_[i].second;
    }
    // u * sum rounded up to sum (u within 2^-53 of 1): the last token with mass.
    return cand_[last_positive].second;
}

int32_t sampler::sample(const float * logits, int32_t n_vocab, const std::vector<int32_t> & history, size_t n_prompt) {
    AUTOGLM_CHECK_ARG(n_vocab > 0, "sample: n_vocab must be > 0, got " + std::to_string(n_vocab));
    AUTOGLM_CHECK_ARG(logits != nullptr, "sample: logits is null");
    for (size_t i = 0; i < history.size(); ++i) {
        if (history[i] < 0 || history[i] >= n_vocab) {
            throw invalid_argument("sample: history[" + std::to_string(i) + "] = " + std::to_string(history[i]) +
                                   " is not a token id: expected 0 <= id < n_vocab = " + std::to_string(n_vocab));
        }
    }

    cand_.resize(static_cast<size_t>(n_vocab));
    for (int32_t i = 0; i < n_vocab; ++i) {
        const float l = logits[i];
        cand_[static_cast<size_t>(i)] = {std::isnan(l) ? kNegInf : l, i};
    }
    apply_penalties(history, n_prompt);

    if (p_.temperature <= 0.0f) {
        size_t best = 0;  // strict '>' keeps the lowest id among equal maxima
        for (size_t i = 1; i < cand_.size(); ++i) {
            if (cand_[i].first > cand_[best].first) best = i;
        }
        AUTOGLM_CHECK_ARG(cand_[best].first != kNegInf, "sample: every logit is NaN or -inf (n_vocab = " +
                                                            std::to_string(n_vocab) + "), there is no token to choose");
        return cand_[best].second;
    }

    drop_impossible();
    AUTOGLM_CHECK_ARG(!cand_.empty(), "sample: every logit is NaN or -inf (n_vocab = " + std::to_string(n_vocab) +
                                          "), there is no token to choose");

    const bool top_k_on = p_.top_k > 0 && static_cast<size_t>(p_.top_k) < cand_.size();
    if (top_k_on) top_k_filter();
    if (p_.top_p < 1.0f) top_p_filter(top_k_on);
    if (p_.min_p > 0.0f) min_p_filter();
    return draw();
}

}  // namespace autoglm
