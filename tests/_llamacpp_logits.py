"""Every prompt position's logits from llama.cpp (llama-cpp-python) on a GGUF: F32 K/V cache, no flash
attention, so that it computes what our runtime computes. Shared by the tests that compare the two."""

import numpy as np


def llamacpp_logits(path, ids: list[int]) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=2, logits_all=True, verbose=False, flash_attn=False,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def llamacpp_runs_avx2_kernels() -> bool:
    """Whether the peer's ggml was built for AVX2 at most, as the README's test command builds it
    (GGML_NATIVE=OFF): then its kernels sum in the order of the AVX2 kernels ours mirror. A native
    build on an AVX-512 machine sums in other orders (measured on a Xeon: max rel 0.11 on a random
    Q4_K_M model, with ggml's own kernels on our side too)."""
    import llama_cpp

    return "AVX512 = 1" not in llama_cpp.llama_print_system_info().decode()
