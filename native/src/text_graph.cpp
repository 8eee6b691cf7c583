// ref: transformers models/glm4v/modeling_glm4v.py Glm4vTextModel, Glm4vTextDecoderLayer,
//      Glm4vTextAttention, Glm4vTextMLP, apply_multimodal_rotary_pos_emb.
#include "text_graph.h"

#include <cmath>

#include "block32_x16.h"
#include "gemm.h"
#include "gemv_block32.h"
#include "gemv_block32_x16.h"
#include "gemv_q4_0.h"
#include "gemv_q4_k.h"
#include "gemv_q5_k.h"
#include "gemv_q6_k.h"
#include "graph_util.h"

namespace autoglm {

size_t graph_max_nodes(const text_model & model) { return 1024 + 64 * (size_t) model.hparams().n_layer; }

size_t graph_ctx_size(const text_model & model) {
    const size_t n = graph_max_nodes(model);
    return n * ggml_tensor_overhead() + ggml_graph_overhead_custom(n, false);
}

text_graph build_text_graph(ggml_context * ctx, const text_model & model, const kv_cache & kv, const text_graph_shape & s) {
    const text_hparams & hp = model.hparams();
    const int64_t n_tokens = s.n_tokens, n_kv = s.n_kv;
    const int64_t head_dim = hp.head_dim, n_head = hp.n_head, n_head_kv = hp.n_head_kv;
    const int64_t n_embd_kv = head_dim * n_head_kv;
    const float kq_scale = 1.0f / std::sqrt((float) head_dim);

    text_graph g;
    g.gf = ggml_new_graph_custom(ctx, graph_max_nodes(model), false);

    // A weight matmul: our prompt GEMM (gemm.h) or decode GEMV (gemv_q4_0.h, gemv_q4_k.h, gemv_block32.h, gemv_q5_k.h, gemv_q6_k.h) where one
    // applies, else ggml's.
    auto mm = [&](ggml_tensor * w, ggml_tensor * x) {
        if (x16_marked(w)) {  // our interleaved layout (block32_x16.h): only our kernels read it, at every batch size
            if (!ggml_is_contiguous(x)) x = ggml_cont(ctx, x);
            return x16_gemv_applies(w, x) ? x16_gemv_mul_mat(ctx, w, x) : gemm_mul_mat(ctx, w, x);
        }
        if (s.own_gemm && gemm_applies(w, x->ne[1])) return gemm_mul_mat(ctx, w, x);
        if (s.own_gemm && gemv_q4_0_applies(w, x)) return gemv_q4_0_mul_mat(ctx, w, x);
        if (s.own_gemm && gemv_q4_k_applies(w, x)) return gemv_q4_k_mul_mat(ctx, w, x);
        if (s.own_gemm && gemv_block32_applies(w, x)) return gemv_block32_mul_mat(ctx, w, x);
        if (s.own_gemm && gemv_q5_k_applies(w, x)) return gemv_q5_k_mul_mat(ctx, w, x);
        if (s.own_gemm && gemv_q6_k_applies(w, x)) return gemv_q6_k_mul_mat(ctx, w, x);
        return ggml_mul_mat(ctx, w, x);
    };
    auto mm_b = [&](ggml_tensor * w, ggml_tensor * x, ggml_tensor * b) {
        ggml_tensor * y = mm(w, x);
        return b ? ggml_add(ctx, y, b) : y;
    };
    // The prompt attention's kernel (with s.cpu_attn set): BF16 where "auto" and the layer's query
    // matrix runs on the BF16 tiles (text_graph_shape::attn_auto).
    auto attention_for = [&](ggml_tensor * wq) {
        const bool own = x16_marked(wq) || (s.own_gemm && gemm_applies(wq, n_tokens));
        if (s.attn_auto && s.cpu_attn == attn_kernel::avx512 && own && cpu_attention_has(attn_kernel::avx512_bf16) &&
            gemm_uses_bf16_tiles(wq->type, gemm_best_isa(), n_tokens)) {
            return attn_kernel::avx512_bf16;
        }
        return s.cpu_attn;
    };
    auto f32_acc = [](ggml_tensor * t) {  // only ggml's matmul has a precision setting (ours accumulates in F32)
        if (t->op == GGML_OP_MUL_MAT) ggml_prec_set_acc(t, GGML_PREC_F32);
    };

    ggml_tensor * cur;
    if (s.embd_input) {
        g.inp_embd = named(ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.n_embd, n_tokens), "inp_embd");
        ggml_set_input(g.inp_embd);
        cur = g.inp_embd;
    } else {
        g.inp_tokens = named(ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_tokens), "inp_tokens");
        ggml_set_input(g.inp_tokens);
        cur = named(ggml_get_rows(ctx, model.weights().tok_embd, g.inp_tokens), "inp_embd");  // no embedding scaling in GLM-4
    }
    g.inp_pos = named(ggml_new_tensor_1d(ctx, GGML_TYPE_I32, hp.mrope ? 4 * n_tokens : n_tokens), "inp_pos");
    ggml_set_input(g.inp_pos);
    g.inp_mask = named(ggml_new_tensor_2d(ctx, s.flash_attn ? GGML_TYPE_F16 : GGML_TYPE_F32, n_kv, n_tokens), "inp_mask");
    ggml_set_input(g.inp_mask);
    g.inp_kv_idx = named(ggml_new_tensor_1d(ctx, GGML_TYPE_I64, n_tokens), "inp_kv_idx");
    ggml_set_input(g.inp_kv_idx);

    // Rotary embedding on the first n_rot dims of each head. M-RoPE files hold Q/K rows in NeoX
    // order, so ggml's M-RoPE kernel (half-split pairs, sections over t/h/w) reproduces HF's
    // interleaved rotation exactly; old text-only files keep HF order: interleaved pairs, 1-D positions.
    int sections[4] = {hp.rope_sections[0], hp.rope_sections[1], hp.rope_sections[2], hp.rope_sections[3]};
    auto rope = [&](ggml_tensor * x) {
        if (hp.mrope) {
            return ggml_rope_multi(ctx, x, g.inp_pos, nullptr, hp.n_rot, sections, GGML_ROPE_TYPE_MROPE, hp.n_ctx_train,
                                   hp.rope_theta, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f);
        }
        return ggml_rope_ext(ctx, x, g.inp_pos, nullptr, hp.n_rot, GGML_ROPE_TYPE_NORMAL, hp.n_ctx_train, hp.rope_theta, 1.0f,
                             0.0f, 1.0f, 0.0f, 0.0f);
    };

    for (int il = 0; il < (int) hp.n_layer; ++il) {
        const text_layer & L = model.weights().layers[il];
        ggml_tensor * inpL = cur;

        // --- attention (sandwich-normed) ---
        cur = named(rms_norm(ctx, inpL, L.attn_norm, hp.rms_eps), "attn_norm", il);
        ggml_tensor * q = mm_b(L.wq, cur, L.bq);  // [n_head*head_dim, n_tokens]
        ggml_tensor * k = mm_b(L.wk, cur, L.bk);  // [n_head_kv*head_dim, n_tokens]
        ggml_tensor * v = mm_b(L.wv, cur, L.bv);
        q = named(rope(ggml_reshape_3d(ctx, q, head_dim, n_head, n_tokens)), "q_rope", il);     // [hd, n_head, n_tok]
        k = named(rope(ggml_reshape_3d(ctx, k, head_dim, n_head_kv, n_tokens)), "k_rope", il);  // [hd, n_kv_h, n_tok]

        // Write this batch's K/V into its cache cells (inp_kv_idx), before the attention below reads them
        // (graph order: the scheduler runs nodes in the order they were added).
        ggml_tensor *k_cache = kv.k(il), *v_cache = kv.v(il);
        const size_t row = ggml_row_size(k_cache->type, n_embd_kv);
        ggml_build_forward_expand(g.gf, ggml_set_rows(ctx, k_cache, ggml_reshape_2d(ctx, k, n_embd_kv, n_tokens), g.inp_kv_idx));
        ggml_build_forward_expand(g.gf, ggml_set_rows(ctx, v_cache, v, g.inp_kv_idx));

        // Attend over cells [0, n_kv): K, V as [head_dim, n_kv, n_head_kv] views of the cache.
        ggml_tensor * K = ggml_view_3d(ctx, k_cache, head_dim, n_kv, n_head_kv, row, ggml_row_size(k_cache->type, head_dim), 0);
        ggml_tensor * V = ggml_view_3d(ctx, v_cache, head_dim, n_kv, n_head_kv, row, ggml_row_size(v_cache->type, head_dim), 0);
        ggml_tensor * Q = ggml_permute(ctx, q, 0, 2, 1, 3);                        // [hd, n_tok, n_head]
        if (s.flash_attn && s.cpu_attn != attn_kernel::none && n_tokens >= 32 && ggml_backend_buffer_is_host(k_cache->buffer)) {
            // Prompt processing on the CPU: our kernel over F32 copies of this layer's K and V, made
            // (and packed) once here instead of per tile; the mask's causal tail is skipped.
            ggml_tensor * Kf = ggml_permute(ctx, ggml_cast(ctx, K, GGML_TYPE_F32), 0, 2, 1, 3);  // [hd, n_kv_h, n_kv]
            ggml_tensor * Vf = ggml_permute(ctx, ggml_cast(ctx, V, GGML_TYPE_F32), 0, 2, 1, 3);  // [hd, n_kv_h, n_kv]
            ggml_tensor * kqv = cpu_attention(ctx, q, Kf, Vf, g.inp_mask, attention_for(L.wq));  // [hd, n_head, n_tok]
            cur = ggml_reshape_2d(ctx, kqv, head_dim * n_head, n_tokens);
        } else if (s.flash_attn) {
            // Fused softmax(QK^T)V without materializing the [n_kv, n_tok, n_head] scores.
            ggml_tensor * kqv = ggml_flash_attn_ext(ctx, Q, K, V, g.inp_mask, kq_scale, 0.0f, 0.0f);  // [hd, n_head, n_tok]
            ggml_prec_set_acc(kqv, GGML_PREC_F32);
            cur = ggml_reshape_2d(ctx, kqv, head_dim * n_head, n_tokens);
        } else {
            // A GPU backend converts a non-contiguous right-hand operand to F16 before the matmul (ggml-vulkan
            // does); a contiguous Q keeps this F32-cache path in F32 there. The CPU reads it either way.
            if (!ggml_backend_buffer_is_host(k_cache->buffer)) Q = ggml_cont(ctx, Q);
            ggml_tensor * kq = ggml_mul_mat(ctx, K, Q);  // [n_kv, n_tok, n_head] (GQA broadcast)
            ggml_prec_set_acc(kq, GGML_PREC_F32);
            kq = named(ggml_soft_max_ext(ctx, kq, g.inp_mask, kq_scale, 0.0f), "kq_soft_max", il);
            ggml_tensor * Vt = ggml_cont(ctx, ggml_permute(ctx, V, 1, 0, 2, 3));  // [n_kv, hd, n_head_kv]
            ggml_tensor * kqv = ggml_mul_mat(ctx, Vt, kq);  // [hd, n_tok, n_head]
            cur = ggml_cont_2d(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3), head_dim * n_head, n_tokens);
        }
        cur = named(cur, "kqv_out", il);
        cur = mm(L.wo, cur);
        f32_acc(cur);  // glm4 needs F32 accumulation here (spec A.3.5)
        cur = named(rms_norm(ctx, cur, L.post_attn_norm, hp.rms_eps), "attn_post_norm", il);
        ggml_tensor * h = named(ggml_add(ctx, inpL, cur), "attn_residual", il);

        // --- MLP (sandwich-normed): down(silu(gate) * up) with gate/up fused, gate rows first ---
        cur = named(rms_norm(ctx, h, L.ffn_norm, hp.rms_eps), "ffn_norm", il);
        cur = ggml_swiglu(ctx, mm(L.ffn_up, cur));
        cur = mm(L.ffn_down, cur);
        f32_acc(cur);
        cur = named(rms_norm(ctx, cur, L.post_ffw_norm, hp.rms_eps), "ffn_post_norm", il);
        cur = named(ggml_add(ctx, h, cur), "l_out", il);
    }

    if (s.n_out == 0) return g;  // prefill chunk whose logits nobody reads: only the cache writes matter
    if (s.n_out != s.n_tokens) {  // keep only the rows whose logits are wanted
        g.inp_out_ids = named(ggml_new_tensor_1d(ctx, GGML_TYPE_I32, s.n_out), "inp_out_ids");
        ggml_set_input(g.inp_out_ids);
        cur = ggml_get_rows(ctx, cur, g.inp_out_ids);
    }
    cur = named(rms_norm(ctx, cur, model.weights().output_norm, hp.rms_eps), "result_norm");
    // the output head through our kernels too (in decode, a tenth of the bytes a step reads)
    g.logits = named(mm(model.weights().output, cur), "result_output");
    ggml_set_output(g.logits);
    ggml_build_forward_expand(g.gf, g.logits);
    return g;
}

}  // namespace autoglm
