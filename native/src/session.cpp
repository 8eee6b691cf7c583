#include "session.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "error.h"

namespace autoglm {

session::session(const text_model & model, const session_params & params)
    : model_(model), params_(params), kv_(model, params.n_ctx, params.kv_type) {
    if (params_.n_batch == 0) throw invalid_argument("n_batch must be positive");
    flash_attn_ = params_.flash_attn == session_params::flash::on ||
                  (params_.flash_attn == session_params::flash::automatic && params_.kv_type == GGML_TYPE_F16);
    cpu_attn_ = flash_attn_ ? cpu_attention_kernel(params_.attention) : attn_kernel::none;
    attn_auto_ = cpu_attention_is_auto(params_.attention);
    auto backends = model_.backends().all();
    sched_.reset(ggml_backend_sched_new(backends.data(), nullptr, (int) backends.size(), graph_max_nodes(model_), false, true));
    if (!sched_) throw error("cannot create the backend scheduler");
    graph_buf_.resize(graph_ctx_size(model_));

    // Reserve compute memory once for the largest graph (a full micro-batch at a full cache), so
    // evaluation never reallocates mid-conversation and an impossible n_ctx fails here, clearly.
    ggml_init_params ip{graph_buf_.size(), graph_buf_.data(), true};
    ggml_ctx_ptr ctx(ggml_init(ip));
    const uint32_t n_tok = std::min(params_.n_batch, params_.n_ctx);
    text_graph g =
        build_text_graph(ctx.get(), model_, kv_, {n_tok, params_.n_ctx, n_tok, false, flash_attn_, cpu_attn_, attn_auto_});
    if (!ggml_backend_sched_reserve(sched_.get(), g.gf)) {
        throw out_of_memory("cannot reserve compute buffers for n_ctx=" + std::to_string(params_.n_ctx) +
                            ", n_batch=" + std::to_string(params_.n_batch) + "; use smaller values");
    }
}

std::unique_lock<std::recursive_mutex> session::acquire() {
    std::unique_lock<std::recursive_mutex> lock(busy_, std::try_to_lock);
    if (!lock.owns_lock()) {
        throw busy(
            "this session (conversation context) is in use by another thread; give each thread its own "
            "session, or wait for the other call to finish");
    }
    return lock;
}

void session::truncate(uint32_t n) {
    auto lock = acquire();
    if (n < kv_.n_used()) ++epoch_;
    kv_.truncate(n);
}

std::vector<float> session::eval_tokens(const std::vector<int32_t> & tokens, logits_mode mode) {
    auto lock = acquire();
    const int32_t n_vocab = (int32_t) model_.hparams().n_vocab;
    for (size_t i = 0; i < tokens.size(); ++i) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab) {
            throw invalid_argument("token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                   " is outside the vocabulary [0, " + std::to_string(n_vocab) + ")");
        }
    }
    std::vector<std::array<int32_t, 3>> pos(tokens.size());
    std::vector<int32_t> next(tokens.size());
    std::vector<uint64_t> keys(tokens.size());
    int32_t p = kv_.next_pos();
    for (size_t i = 0; i < tokens.size(); ++i, ++p) {
        pos[i] = {p, p, p};
        next[i] = p + 1;
        keys[i] = (uint64_t) (uint32_t) tokens[i];
    }
    progress_base_ = 0;
    progress_total_ = (uint32_t) tokens.size();
    return eval(tokens.data(), nullptr, (uint32_t) tokens.size(), pos, next, keys, mode);
}

std::vector<float> session::eval_cells(const std::vector<prompt_cell> & cells, size_t begin, size_t end,
                                       const std::vector<prompt_piece> & pieces, logits_mode mode) {
    auto lock = acquire();
    if (end > cells.size() || begin > end) throw invalid_argument("eval_cells: bad cell range");
    if ((size_t) kv_.n_used() + (end - begin) > kv_.n_ctx()) {
        throw context_full("context full: " + std::to_string(kv_.n_used()) + " cached + " + std::to_string(end - begin) +
                           " new cells exceed n_ctx = " + std::to_string(kv_.n_ctx()));
    }
    std::vector<float> out;
    const uint32_t start = kv_.n_used();
    try {
        // Runs of consecutive cells of the same piece: token runs, or contiguous rows of one image.
        for (size_t i = begin; i < end;) {
            size_t j = i + 1;
            while (j < end && cells[j].piece == cells[i].piece) ++j;
            const prompt_piece & pc = pieces[cells[i].piece];
            std::vector<std::array<int32_t, 3>> pos;
            std::vector<int32_t> next, toks;
            std::vector<uint64_t> keys;
            for (size_t k = i; k < j; ++k) {
                pos.push_back(cells[k].pos);
                next.push_back(cells[k].next_pos);
                keys.push_back(cells[k].key);
                if (!pc.is_image()) toks.push_back(cells[k].token);
            }
            const bool last_run = j == end;
            const logits_mode m = mode == logits_mode::all ? logits_mode::all : (last_run ? mode : logits_mode::none);
            const float * embd = pc.is_image() ? pc.embd + (size_t) cells[i].row * model_.hparams().n_embd : nullptr;
            progress_base_ = (uint32_t) (i - begin);
            progress_total_ = (uint32_t) (end - begin);
            auto rows = eval(pc.is_image() ? nullptr : toks.data(), embd, (uint32_t) (j - i), pos, next, keys, m);
            out.insert(out.end(), rows.begin(), rows.end());
            i = j;
        }
    } catch (...) {
        kv_.truncate(start);
        throw;
    }
    return out;
}

std::vector<float> session::eval(const int32_t * tokens, const float * embd, uint32_t n,
                                 const std::vector<std::array<int32_t, 3>> & pos, const std::vector<int32_t> & next_after,
                                 const std::vector<uint64_t> & keys, logits_mode mode) {
    if (n == 0) return {};
    if ((size_t) kv_.n_used() + n > kv_.n_ctx()) {
        throw context_full("context full: " + std::to_string(kv_.n_used()) + " cached + " + std::to_string(n) +
                           " new tokens exceed n_ctx = " + std::to_string(kv_.n_ctx()) +
                           " (create the session with a larger n_ctx)");
    }
    const size_t n_vocab = model_.hparams().n_vocab;
    const uint32_t n_out_total = mode == logits_mode::all ? n : (mode == logits_mode::last ? 1 : 0);
    std::vector<float> logits(n_out_total * n_vocab);
    const size_t n_embd = model_.hparams().n_embd;
    const uint32_t start = kv_.n_used();
    ++epoch_;
    try {
        for (uint32_t i0 = 0; i0 < n; i0 += params_.n_batch) {
            if (progress && !progress(progress_base_ + i0, progress_total_)) throw aborted("aborted");
            const uint32_t nb = std::min(params_.n_batch, n - i0);
            const bool last_ub = i0 + nb == n;
            const uint32_t n_out = mode == logits_mode::all ? nb : (mode == logits_mode::last && last_ub ? 1 : 0);
            float * out = n_out ? logits.data() + (mode == logits_mode::all ? (size_t) i0 * n_vocab : 0) : nullptr;
            run_ubatch(tokens ? tokens + i0 : nullptr, embd ? embd + (size_t) i0 * n_embd : nullptr, nb, pos.data() + i0, n_out,
                       out);
            for (uint32_t j = 0; j < nb; ++j) {
                kv_.append(tokens ? tokens[i0 + j] : -1, keys[i0 + j], pos[i0 + j], next_after[i0 + j]);
            }
        }
    } catch (...) {
        kv_.truncate(start);  // all or nothing: a failed evaluation leaves the cache as it was
        throw;
    }
    return logits;
}

uint32_t session::attended_cells(uint32_t n_needed) const {
    // Padding to 256 keeps the graph's shape (and so the built, allocated graph) the same for 256
    // consecutive decode steps; the extra cells are masked out, and FA skips masked cells.
    constexpr uint32_t pad = 256;
    return std::min(kv_.n_ctx(), (n_needed + pad - 1) / pad * pad);
}

void session::run_ubatch(const int32_t * tokens, const float * embd, uint32_t n, const std::array<int32_t, 3> * pos,
                         uint32_t n_out, float * logits_out) {
    const text_hparams & hp = model_.hparams();
    const uint32_t kv_head = kv_.n_used();
    const text_graph_shape shape{n,          attended_cells(kv_head + n),    n_out, embd != nullptr, flash_attn_, cpu_attn_,
                                 attn_auto_, !(imatrix_ && imatrix_->active)};
    if (!graph_ctx_ || !(shape == graph_shape_)) {
        // ref: llama.cpp reuses the previous graph when its parameters match (llm_graph_result::can_reuse).
        graph_ctx_.reset();
        ggml_init_params ip{graph_buf_.size(), graph_buf_.data(), true};
        graph_ctx_.reset(ggml_init(ip));
        graph_ = build_text_graph(graph_ctx_.get(), model_, kv_, shape);
        graph_shape_ = shape;
        ggml_backend_sched_reset(sched_.get());
        if (!ggml_backend_sched_alloc_graph(sched_.get(), graph_.gf)) {
            graph_ctx_.reset();
            throw error("cannot allocate the compute graph");
        }
        ++graphs_built_;
    } else {
        ++graphs_reused_;
    }
    const text_graph & g = graph_;

    if (g.inp_tokens) ggml_backend_tensor_set(g.inp_tokens, tokens, 0, n * sizeof(int32_t));
    if (g.inp_embd) ggml_backend_tensor_set(g.inp_embd, embd, 0, (size_t) n * hp.n_embd * sizeof(float));
    std::vector<int64_t> cells(n);
    for (uint32_t i = 0; i < n; ++i) cells[i] = kv_head + i;
    ggml_backend_tensor_set(g.inp_kv_idx, cells.data(), 0, cells.size() * sizeof(int64_t));

    std::vector<int32_t> p(hp.mrope ? 4 * n : n, 0);
    for (uint32_t i = 0; i < n; ++i) {
        if (hp.mrope) {
            p[i] = pos[i][0];          // t
            p[n + i] = pos[i][1];      // h
            p[2 * n + i] = pos[i][2];  // w  (4th stream stays 0)
        } else {
            p[i] = pos[i][0];
        }
    }
    ggml_backend_tensor_set(g.inp_pos, p.data(), 0, p.size() * sizeof(int32_t));

    // Causal over cells: query i (cell kv_head + i) sees cells 0..kv_head + i; padding cells see nothing.
    const uint32_t n_kv = shape.n_kv;
    std::vector<float> mask((size_t) n_kv * n, -std::numeric_limits<float>::infinity());
    for (uint32_t i = 0; i < n; ++i) std::fill_n(mask.begin() + (size_t) i * n_kv, kv_head + i + 1, 0.0f);
    if (flash_attn_) {
        std::vector<ggml_fp16_t> mask16(mask.size());
        ggml_fp32_to_fp16_row(mask.data(), mask16.data(), (int64_t) mask.size());
        ggml_backend_tensor_set(g.inp_mask, mask16.data(), 0, mask16.size() * sizeof(ggml_fp16_t));
    } else {
        ggml_backend_tensor_set(g.inp_mask, mask.data(), 0, mask.size() * sizeof(float));
    }

    if (g.inp_out_ids) {
        std::vector<int32_t> ids(n_out);
        for (uint32_t i = 0; i < n_out; ++i) ids[i] = (int32_t) (n - n_out + i);
        ggml_backend_tensor_set(g.inp_out_ids, ids.data(), 0, ids.size() * sizeof(int32_t));
    }
    attach_eval_callback();
    std::lock_guard<std::mutex> compute(model_.compute_mutex());
    const bool ok = ggml_backend_sched_graph_compute(sched_.get(), g.gf) == GGML_STATUS_SUCCESS;
    const std::string imatrix_error = imatrix_ ? imatrix_->take_error() : std::string();
    if (!ok) {
        graph_ctx_.reset();  // rebuild next time
        throw error("graph computation failed");
    }
    if (!imatrix_error.empty()) throw error(imatrix_error);
    if (n_out) ggml_backend_tensor_get(g.logits, logits_out, 0, (size_t) n_out * hp.n_vocab * sizeof(float));
}

imatrix_collector & session::imatrix() {
    if (!imatrix_) imatrix_ = std::make_unique<imatrix_collector>();
    return *imatrix_;
}

void session::attach_eval_callback() {
    // Observers of this computation, in the order they see each node (eval_chain.h). Without any the
    // scheduler runs whole splits at once.
    eval_chain_.clear();
    if (imatrix_ && imatrix_->active) eval_chain_.add(&imatrix_collector::eval_cb, imatrix_.get());
    if (tensor_dump::enabled()) {
        dump_.begin("text");
        eval_chain_.add(&tensor_dump::eval_cb, &dump_);
    }
    if (op_profile::enabled()) {
        profile_.attach(model_.backends().n_threads());
        eval_chain_.add(&op_profile::eval_cb, &profile_);
    }
    eval_chain_.install(sched_.get());
}

}  // namespace autoglm
