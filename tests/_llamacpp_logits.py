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
