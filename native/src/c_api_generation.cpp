// The C API (include/autoglm.h), part 2: generation. A pull API over autoglm::generator that hands
// its pieces out through caller buffers of any size, cutting only between UTF-8 characters.
#include "c_api_internal.h"
#include "unicode.h"

#include <cstring>
#include <string>
#include <vector>

using namespace autoglm::capi;

namespace {

// Length of the UTF-8 character at s[i], or 1 for a byte that does not start a valid one, so that
// a cut between units never splits a character and a unit is never longer than 4 bytes.
size_t utf8_unit(const std::string & s, size_t i) {
    const autoglm::utf8_lead lead = autoglm::utf8_lead_info((unsigned char) s[i]);
    if (lead.len < 2) return 1;  // ASCII, or a byte that starts no character: passed on alone
    const size_t need = lead.len;
    const unsigned char lo = lead.lo, hi = lead.hi;
    if (i + need > s.size()) return 1;
    const auto b1 = (unsigned char) s[i + 1];
    if (b1 < lo || b1 > hi) return 1;
    for (size_t k = 2; k < need; ++k) {
        if (((unsigned char) s[i + k] & 0xC0) != 0x80) return 1;
    }
    return need;
}

autoglm::generate_params to_core(const autoglm_sampling_params & sampling, const autoglm_generation_params & params) {
    autoglm::generate_params gp;
    gp.sampling.temperature = sampling.temperature;
    gp.sampling.top_k = sampling.top_k;
    gp.sampling.top_p = sampling.top_p;
    gp.sampling.min_p = sampling.min_p;
    gp.sampling.repeat_penalty = sampling.repeat_penalty;
    gp.sampling.frequency_penalty = sampling.frequency_penalty;
    gp.sampling.presence_penalty = sampling.presence_penalty;
    gp.sampling.penalty_last_n = sampling.penalty_last_n;
    gp.sampling.seed = sampling.seed;
    gp.max_tokens = params.max_tokens;
    gp.stop_at_eog = params.stop_at_eog;
    if (params.n_stop) require(params.stop, "params.stop");
    for (size_t i = 0; i < params.n_stop; ++i) {
        if (!params.stop[i]) throw autoglm::invalid_argument("params.stop[" + std::to_string(i) + "] is NULL");
        gp.stop.emplace_back(params.stop[i]);
    }
    return gp;
}

autoglm_status start(autoglm_session * session, const std::vector<int32_t> & prompt, const autoglm_sampling_params & sampling,
                     const autoglm_generation_params & params, autoglm_generation ** out) {
    return start_generation(session, sampling, params, out,
                            [&](autoglm::session & s, const autoglm::tokenizer & tok, const autoglm::generate_params & gp) {
                                return std::make_unique<autoglm::generator>(s, tok, prompt, gp);
                            });
}

}  // namespace

namespace autoglm::capi {

autoglm_status start_generation(autoglm_session * session, const autoglm_sampling_params & sampling,
                                const autoglm_generation_params & params, autoglm_generation ** out,
                                const std::function<std::unique_ptr<autoglm::generator>(
                                    autoglm::session &, const autoglm::tokenizer &, const autoglm::generate_params &)> & make) {
    const autoglm::generate_params gp = to_core(sampling, params);
    auto g = std::make_unique<autoglm_generation>();
    g->s = session->s;
    session_state & ss = *g->s;
    ss.epoch++;  // from here on the cache may change: any earlier generation is stale
    g->epoch = ss.epoch;
    {
        std::lock_guard<std::mutex> lock(ss.model->compute);
        g->gen = make(*ss.sess, ss.model->tm->tok(), gp);
    }
    *out = g.release();
    return AUTOGLM_OK;
}

}  // namespace autoglm::capi

extern "C" {

autoglm_sampling_params autoglm_sampling_default_params(void) {
    const autoglm::sampling_params d;
    autoglm_sampling_params p;
    p.temperature = d.temperature;
    p.top_k = d.top_k;
    p.top_p = d.top_p;
    p.min_p = d.min_p;
    p.repeat_penalty = d.repeat_penalty;
    p.frequency_penalty = d.frequency_penalty;
    p.presence_penalty = d.presence_penalty;
    p.penalty_last_n = d.penalty_last_n;
    p.seed = d.seed;
    return p;
}

autoglm_generation_params autoglm_generation_default_params(void) {
    const autoglm::generate_params d;
    autoglm_generation_params p;
    p.max_tokens = d.max_tokens;
    p.stop = nullptr;
    p.n_stop = 0;
    p.stop_at_eog = d.stop_at_eog;
    return p;
}

autoglm_status autoglm_generation_start(autoglm_session * session, const char * prompt, bool parse_special,
                                        autoglm_sampling_params sampling, autoglm_generation_params params,
                                        autoglm_generation ** out) {
    return guarded(__func__, [&] {
        require(session, "session");
        require(prompt, "prompt");
        require(out, "out");
        const auto ids = session->s->model->tm->tok().encode(prompt, parse_special);
        return start(session, ids, sampling, params, out);
    });
}

autoglm_status autoglm_generation_start_tokens(autoglm_session * session, const autoglm_token * tokens, size_t n_tokens,
                                               autoglm_sampling_params sampling, autoglm_generation_params params,
                                               autoglm_generation ** out) {
    return guarded(__func__, [&] {
        require(session, "session");
        require(tokens, "tokens");
        require(out, "out");
        return start(session, std::vector<int32_t>(tokens, tokens + n_tokens), sampling, params, out);
    });
}

autoglm_status autoglm_generation_next(autoglm_generation * gen, char * buf, size_t buf_size, size_t * n_written, bool * done) {
    bool in_core = false;  // whether a failure came from the generator itself (which ends the generation)
    const autoglm_status st = guarded(__func__, [&] {
        require(gen, "gen");
        require(buf, "buf");
        require(n_written, "n_written");
        require(done, "done");
        if (buf_size == 0) throw autoglm::invalid_argument("buf_size is 0 (at least 1, for the NUL)");
        if (gen->failed != AUTOGLM_OK) return fail(__func__, gen->failed, "the generation failed earlier: " + gen->failed_msg);
        if (gen->epoch != gen->s->epoch) {
            throw autoglm::invalid_argument("this generation has ended: its session was reset or started a newer generation");
        }
        if (gen->pending_off == gen->pending.size() && !gen->finished) {
            std::string piece;
            in_core = true;
            bool more;
            {
                std::lock_guard<std::mutex> lock(gen->s->model->compute);
                more = gen->gen->next(piece);
            }
            in_core = false;
            gen->pending = more ? std::move(piece) : std::string();
            gen->pending_off = 0;
            gen->finished = !more;
        }
        const std::string & p = gen->pending;
        size_t & off = gen->pending_off;
        if (off == p.size()) {
            buf[0] = '\0';
            *n_written = 0;
            *done = true;
            return AUTOGLM_OK;
        }
        // As many whole characters as fit before the NUL; the rest waits for the next call.
        const size_t room = buf_size - 1;
        size_t take = 0;
        while (off + take < p.size()) {
            const size_t u = utf8_unit(p, off + take);
            if (take + u > room) break;
            take += u;
        }
        if (take == 0) {
            *n_written = utf8_unit(p, off) + 1;
            return fail(
                __func__, AUTOGLM_ERR_BUFFER_TOO_SMALL,
                "the next character needs buf_size >= " + std::to_string(*n_written) + ", got " + std::to_string(buf_size));
        }
        std::memcpy(buf, p.data() + off, take);
        buf[take] = '\0';
        off += take;
        *n_written = take;
        *done = false;
        return AUTOGLM_OK;
    });
    if (st != AUTOGLM_OK && in_core) {
        gen->failed = st;
        try {
            const std::string prefix = std::string(__func__) + ": ";  // fail() added it; it is added again
            const std::string & msg = last_error();
            gen->failed_msg = msg.compare(0, prefix.size(), prefix) == 0 ? msg.substr(prefix.size()) : msg;
        } catch (...) {}
    }
    return st;
}

autoglm_finish_reason autoglm_generation_finish_reason(const autoglm_generation * gen) {
    if (!gen) return null_handle(__func__, "gen"), AUTOGLM_FINISH_NONE;
    // Finished for the caller only once autoglm_generation_next has said done: until then text may
    // still be waiting in `pending` (a piece cut to the caller's buffer), and the header promises NONE.
    if (!gen->finished || gen->pending_off < gen->pending.size()) return AUTOGLM_FINISH_NONE;
    switch (gen->gen->reason()) {
        case autoglm::finish_reason::stop: return AUTOGLM_FINISH_STOP;
        case autoglm::finish_reason::length: return AUTOGLM_FINISH_LENGTH;
        default: return AUTOGLM_FINISH_NONE;
    }
}

autoglm_status autoglm_generation_timings(const autoglm_generation * gen, autoglm_timings * out) {
    return guarded(__func__, [&] {
        require(gen, "gen");
        require(out, "out");
        const auto & t = gen->gen->timings();
        out->n_prompt = t.n_prompt;
        out->n_prompt_reused = t.n_prompt_reused;
        out->n_generated = t.n_generated;
        out->prompt_ms = t.prompt_ms;
        out->gen_ms = t.gen_ms;
        out->prompt_tokens_per_s = t.prompt_tps();
        out->gen_tokens_per_s = t.gen_tps();
        out->image_ms = gen->image_ms;
        out->n_image_tokens = gen->n_image_tokens;
        return AUTOGLM_OK;
    });
}

void autoglm_generation_free(autoglm_generation * gen) { delete gen; }

}  // extern "C"
