// ref: transformers models/glm4v/modeling_glm4v.py Glm4vVisionModel.forward, Glm4vVisionEmbeddings,
//      Glm4vVisionRotaryEmbedding + apply_rotary_pos_emb_vision, Glm4vVisionAttention, Glm4VisionMlp,
//      Glm4vVisionPatchMerger; vision_utils.get_vision_position_ids (merge-window order).
#include "vision_graph.h"

#include <cmath>

#include "gemm_float.h"
#include "graph_util.h"

namespace autoglm {

namespace {

// y = W x (+ b), W one of the tower's matrices: our float GEMM where it applies (gemm_float.h).
ggml_tensor * matrix(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * b, bool own_gemm) {
    ggml_tensor * y = own_gemm && float_gemm_applies(w, x) ? float_gemm_mul_mat(ctx, w, x) : ggml_mul_mat(ctx, w, x);
    return b ? ggml_add(ctx, y, b) : y;
}

// down(silu(gate(x)) * up(x)): Glm4VisionMlp and the merger's tail. silu and mul as two ops rather
// than ggml_swiglu_split: the allocator runs both in place over gate's buffer (a fused GLU gets a
// buffer of its own), which at 12,432 patches saves 200 MB of peak compute memory.
ggml_tensor * swiglu_mlp(ggml_context * ctx, ggml_tensor * x, ggml_tensor * gate, ggml_tensor * gate_b, ggml_tensor * up,
                         ggml_tensor * up_b, ggml_tensor * down, ggml_tensor * down_b, bool own_gemm) {
    ggml_tensor * g = matrix(ctx, gate, x, gate_b, own_gemm);
    ggml_tensor * u = matrix(ctx, up, x, up_b, own_gemm);
    return matrix(ctx, down, ggml_mul(ctx, ggml_silu(ctx, g), u), down_b, own_gemm);
}

}  // namespace

void merge_window_coords(int32_t grid_h, int32_t grid_w, int32_t merge, std::vector<int32_t> & rows,
                         std::vector<int32_t> & cols) {
    // Block-major over merge x merge windows, raster inside a window (HF get_vision_position_ids).
    const size_t n = (size_t) grid_h * grid_w;
    rows.resize(n);
    cols.resize(n);
    size_t i = 0;
    for (int32_t by = 0; by < grid_h / merge; ++by) {
        for (int32_t bx = 0; bx < grid_w / merge; ++bx) {
            for (int32_t dy = 0; dy < merge; ++dy) {
                for (int32_t dx = 0; dx < merge; ++dx, ++i) {
                    rows[i] = by * merge + dy;
                    cols[i] = bx * merge + dx;
                }
            }
        }
    }
}

size_t vision_graph_max_nodes(const vision_hparams & hp) { return 256 + 48 * (size_t) hp.n_layer; }

size_t vision_graph_ctx_size(const vision_hparams & hp) {
    const size_t n = vision_graph_max_nodes(hp);
    return n * ggml_tensor_overhead() + ggml_graph_overhead_custom(n, false);
}

vision_graph build_vision_graph(ggml_context * ctx, const vision_hparams & hp, const vision_weights & w, int32_t grid_h,
                                int32_t grid_w, attn_kernel attn, bool own_gemm) {
    const int64_t n_embd = hp.n_embd, n_head = hp.n_head, head_dim = n_embd / n_head;
    const int64_t n_patches = (int64_t) grid_h * grid_w;
    const int64_t m = hp.merge_size, n_tokens = n_patches / (m * m);
    const int64_t patch_dim = 3 * (int64_t) hp.patch_size * hp.patch_size;

    vision_graph g;
    g.gf = ggml_new_graph_custom(ctx, vision_graph_max_nodes(hp), false);

    // --- patch embedding (Glm4vVisionPatchEmbed): one matmul, rows of the input are patches ---
    g.inp_patches = named(ggml_new_tensor_2d(ctx, GGML_TYPE_F32, patch_dim, n_patches), "v_inp_patches");
    ggml_set_input(g.inp_patches);
    ggml_tensor * cur = named(matrix(ctx, w.patch_w, g.inp_patches, w.patch_b, own_gemm), "v_patch_embd");
    if (w.norm_embd) cur = named(rms_norm(ctx, cur, w.norm_embd, hp.eps), "v_norm_embd");  // post_conv_layernorm

    // --- absolute position embedding (Glm4vVisionEmbeddings, spec B.4) ---
    // HF samples the side x side table with grid_sample(bicubic, align_corners=False, border) at the
    // patch centres: src = (i + 0.5) * side / grid - 0.5, taps clamped to the table. ggml's bicubic
    // interpolate (no ALIGN_CORNERS flag) computes exactly that per axis, with a = -0.75 like PyTorch,
    // over the first two dims, so the table goes in as [x = col, y = row, channel].
    if (w.pos_embd) {
        const int64_t side = (int64_t) std::lround(std::sqrt((double) hp.n_pos));
        ggml_tensor * table = w.pos_embd;  // [n_embd, side*side], entry row*side + col
        if (grid_h != side || grid_w != side) {  // at the table's own size the bicubic weights are (0,1,0,0)
            ggml_tensor * t = ggml_reshape_3d(ctx, table, n_embd, side, side);           // [C, col, row]
            t = ggml_cont(ctx, ggml_permute(ctx, t, 2, 0, 1, 3));                          // [col, row, C]
            t = ggml_interpolate(ctx, t, grid_w, grid_h, n_embd, 1, GGML_SCALE_MODE_BICUBIC);  // [grid_w, grid_h, C]
            t = ggml_cont(ctx, ggml_permute(ctx, t, 1, 2, 0, 3));                          // [C, grid_w, grid_h]
            table = ggml_reshape_2d(ctx, t, n_embd, n_patches);                            // raster order
        }
        // Raster -> merge-window order by gathering rows: the index input is the raster position of
        // each patch, computed on the CPU with the RoPE positions.
        g.inp_raster = named(ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_patches), "v_inp_raster");
        ggml_set_input(g.inp_raster);
        ggml_tensor * pos = named(ggml_get_rows(ctx, table, g.inp_raster), "v_pos_embd");
        cur = named(ggml_add(ctx, cur, pos), "v_embd");
    }

    // --- 2-D RoPE (spec B.3) ---
    // HF: 32 frequencies for head_dim 128, angle of dim d = [row*w, col*w][d mod 64], half-split pairs
    // (d, d + head_dim/2). ggml VISION mode: n_dims = head_dim/2, pairs (i, i + n_dims) over the whole
    // head, frequency theta^(-2k/n_dims) restarted at each section; with sections {hd/4 x 4}, pairs
    // 0..hd/4-1 take stream 0 (row) and pairs hd/4..hd/2-1 stream 1 (col); streams 2, 3 are never read.
    g.inp_pos = named(ggml_new_tensor_1d(ctx, GGML_TYPE_I32, 4 * n_patches), "v_inp_pos");
    ggml_set_input(g.inp_pos);
    int sections[4] = {(int) head_dim / 4, (int) head_dim / 4, (int) head_dim / 4, (int) head_dim / 4};
    auto rope = [&](ggml_tensor * x) {
        return ggml_rope_multi(ctx, x, g.inp_pos, nullptr, (int) head_dim / 2, sections, GGML_ROPE_TYPE_VISION,
                               /*n_ctx_orig (YaRN only)=*/4096, hp.rope_theta, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f);
    };
    const float kq_scale = 1.0f / std::sqrt((float) head_dim);

    for (int il = 0; il < (int) hp.n_layer; ++il) {
        const vision_layer & L = w.layers[il];

        // --- attention: full and bidirectional over the image's patches ---
        ggml_tensor * x = named(rms_norm(ctx, cur, L.ln1, hp.eps), "v_attn_norm", il);
        ggml_tensor * qkv = named(matrix(ctx, L.qkv, x, L.qkv_b, own_gemm), "v_qkv", il);  // [3*n_embd, n_patches]
        const size_t es = ggml_element_size(qkv);
        auto head_view = [&](int part) {  // [head_dim, n_head, n_patches] view of q (0), k (1) or v (2)
            return ggml_view_3d(ctx, qkv, head_dim, n_head, n_patches, head_dim * es, qkv->nb[1], part * n_embd * es);
        };
        ggml_tensor * q = named(rope(head_view(0)), "v_q_rope", il);
        ggml_tensor * k = named(rope(head_view(1)), "v_k_rope", il);
        // softmax(QK^T)V without storing the N x N scores (N = 12,432 for a phone screenshot).
        ggml_tensor * o;
        if (attn == attn_kernel::avx512_bf16) {
            o = cpu_attention_bf16(ctx, q, k, head_view(2));  // [hd, n_head, N]; packs K and V itself
        } else if (attn != attn_kernel::none) {
            o = cpu_attention(ctx, q, k, head_view(2), nullptr, attn);  // [hd, n_head, N]; packs K and V itself
        } else {
            // K/V stay F32, so the CPU kernel computes in F32 (a GPU backend converts them as it needs).
            ggml_tensor * Q = ggml_permute(ctx, q, 0, 2, 1, 3);  // [hd, N, n_head]
            ggml_tensor * K = ggml_permute(ctx, k, 0, 2, 1, 3);
            ggml_tensor * V = ggml_permute(ctx, head_view(2), 0, 2, 1, 3);
            o = ggml_flash_attn_ext(ctx, Q, K, V, nullptr, kq_scale, 0.0f, 0.0f);  // [hd, n_head, N]
            ggml_prec_set_acc(o, GGML_PREC_F32);
        }
        o = named(ggml_reshape_2d(ctx, o, n_embd, n_patches), "v_kqv_out", il);
        cur = named(ggml_add(ctx, cur, matrix(ctx, L.out, o, L.out_b, own_gemm)), "v_attn_residual", il);

        // --- MLP: down(silu(gate(n)) * up(n)), n = norm2(x) ---
        x = named(rms_norm(ctx, cur, L.ln2, hp.eps), "v_ffn_norm", il);
        x = swiglu_mlp(ctx, x, L.ffn_gate, L.ffn_gate_b, L.ffn_up, L.ffn_up_b, L.ffn_down, L.ffn_down_b, own_gemm);
        cur = named(ggml_add(ctx, cur, x), "v_l_out", il);
    }
    cur = named(rms_norm(ctx, cur, w.post_ln, hp.eps), "v_post_ln");

    // --- downsample: Conv2d(k = s = m) over each m x m window, as one matmul ---
    // A window's m*m patches are consecutive (merge-window order), index g = dy*m + dx. HF's kernel
    // [out, in, kh, kw] is ggml [kw, kh, in, out], i.e. per output a row flattened as (c, dy, dx) =
    // c*m*m + g. The activations [C, g, token] are permuted to [g, C, token] to match that row order
    // (cheaper than reordering a kernel of any storage type).
    {
        ggml_tensor * x = ggml_reshape_3d(ctx, cur, n_embd, m * m, n_tokens);
        x = ggml_cont(ctx, ggml_permute(ctx, x, 1, 0, 2, 3));                  // [m*m, C, n_tokens]
        x = ggml_reshape_2d(ctx, x, m * m * n_embd, n_tokens);
        ggml_tensor * k = ggml_reshape_2d(ctx, w.merge_w, m * m * n_embd, w.merge_w->ne[3]);
        cur = named(matrix(ctx, k, x, w.merge_b, own_gemm), "v_downsample");            // [n_out, n_tokens]
    }
    // Windows come block row by block row, so the merged tokens are already in raster order.

    // --- merger (Glm4vVisionPatchMerger): fc -> LayerNorm (eps 1e-5) -> exact GELU -> SwiGLU ---
    cur = matrix(ctx, w.fc, cur, w.fc_b, own_gemm);
    cur = ggml_norm(ctx, cur, 1e-5f);
    cur = ggml_mul(ctx, cur, w.post_norm);
    if (w.post_norm_b) cur = ggml_add(ctx, cur, w.post_norm_b);
    cur = named(ggml_gelu_erf(ctx, cur), "v_merger_act");  // nn.GELU() is the erf form
    cur = named(swiglu_mlp(ctx, cur, w.gate, w.gate_b, w.up, w.up_b, w.down, w.down_b, own_gemm), "v_out");

    g.out = cur;
    ggml_set_output(g.out);
    ggml_build_forward_expand(g.gf, g.out);
    return g;
}

}  // namespace autoglm
