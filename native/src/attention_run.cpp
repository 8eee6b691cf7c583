#include "attention_run.h"

#include "backend.h"
#include "cpu_attention.h"
#include "error.h"
#include "ggml-alloc.h"
#include "ggml_ptr.h"

namespace autoglm {

void attention_run(const float * q, const float * k, const float * v, const uint16_t * mask, int64_t hd, int64_t n_head,
                   int64_t n, int64_t n_head_kv, int64_t n_kv, const std::string & kernel, int n_threads, float * out) {
    if (hd <= 0 || n_head <= 0 || n <= 0 || n_head_kv <= 0 || n_kv <= 0 || n_head % n_head_kv != 0) {
        throw invalid_argument("attention: expected positive sizes and n_head a multiple of n_head_kv");
    }
    const attn_kernel kern = cpu_attention_kernel(kernel);
    if (kern == attn_kernel::none) throw invalid_argument("attention: 'ggml' is not one of our kernels");
    backend_set backends(n_threads, false);
    ggml_init_params ip{64 * ggml_tensor_overhead() + ggml_graph_overhead(), nullptr, true};
    ggml_ctx_ptr ctx(ggml_init(ip));
    ggml_tensor * tq = ggml_new_tensor_3d(ctx.get(), GGML_TYPE_F32, hd, n_head, n);
    ggml_tensor * tk = ggml_new_tensor_3d(ctx.get(), GGML_TYPE_F32, hd, n_head_kv, n_kv);
    ggml_tensor * tv = ggml_new_tensor_3d(ctx.get(), GGML_TYPE_F32, hd, n_head_kv, n_kv);
    ggml_tensor * tm = mask ? ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F16, n_kv, n) : nullptr;
    ggml_tensor * o = cpu_attention(ctx.get(), tq, tk, tv, tm, kern);
    ggml_cgraph * gf = ggml_new_graph(ctx.get());
    ggml_build_forward_expand(gf, o);
    ggml_buf_ptr buf(ggml_backend_alloc_ctx_tensors(ctx.get(), backends.cpu()));
    if (!buf) throw out_of_memory("attention: cannot allocate the graph's tensors");
    ggml_backend_tensor_set(tq, q, 0, ggml_nbytes(tq));
    ggml_backend_tensor_set(tk, k, 0, ggml_nbytes(tk));
    ggml_backend_tensor_set(tv, v, 0, ggml_nbytes(tv));
    if (tm) ggml_backend_tensor_set(tm, mask, 0, ggml_nbytes(tm));
    if (ggml_backend_graph_compute(backends.cpu(), gf) != GGML_STATUS_SUCCESS) throw error("attention: the graph failed");
    ggml_backend_tensor_get(o, out, 0, ggml_nbytes(o));
}

}  // namespace autoglm
