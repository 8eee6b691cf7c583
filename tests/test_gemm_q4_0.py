"""The experimental AVX2 Q4_0 prompt GEMM (native/src/gemm_q4_0.h) against exact integer arithmetic:
Q4_0 weights from ggml's own quantizer, activations quantized per 32-block to int8 as ggml's Q8_0
(q = round-half-even(x * 127 / max|x|), d = max|x| / 127 kept in F16, as ggml's AVX2 code), int32 dot products per block, scaled by
both scales."""

from __future__ import annotations

import numpy as np
import pytest

from _gemm_util import prompt_logits
from autoglm_gguf import _core

pytestmark = pytest.mark.skipif(not _core._gemm_available(), reason="the kernel needs AVX2, FMA and F16C")


def _reference(wq: np.ndarray, a: np.ndarray) -> np.ndarray:
    n, k = wq.shape[0], a.shape[1]
    blocks = wq.reshape(n, k // 32, 18)
    dw = blocks[:, :, :2].copy().view(np.float16)[:, :, 0].astype(np.float64)          # [n, nb]
    qs = blocks[:, :, 2:]
    nib = np.concatenate([qs & 0x0F, qs >> 4], axis=2).astype(np.int64) - 8            # [n, nb, 32]
    x = a.reshape(a.shape[0], k // 32, 32).astype(np.float32)
    amax = np.abs(x).max(axis=2)
    d = (amax / np.float32(127)).astype(np.float32)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    da = d.astype(np.float16).astype(np.float32)  # ggml keeps the Q8_0 scale in F16
    q = np.rint(x * inv[:, :, None]).astype(np.int64)                                   # [m, nb, 32]
    dots = np.einsum("mbk,nbk->mnb", q, nib)                                            # exact int64
    return np.einsum("mnb,mb,nb->mn", dots.astype(np.float64), da.astype(np.float64), dw)


@pytest.mark.parametrize("m,n,k", [(1, 8, 32), (3, 13, 96), (5, 72, 256), (64, 40, 512), (130, 24, 160)])
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_exact_integer_arithmetic(m, n, k, threads):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    w = rng.standard_normal((n, k)).astype(np.float32)
    a = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10, (m, 1))).astype(np.float32)
    a[0, :32] = 0.0  # an all-zero block: scale 0
    wq = _core.quantize(w, "q4_0")
    got = _core._gemm(wq, a, "q4_0", threads)
    ref = _reference(wq, a)
    assert got.shape == (m, n)
    # F32 accumulation over K/32 blocks vs the exact sum
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    # and it is a matrix product: close to the float product of the dequantized weights
    deq = _reference(wq, np.eye(k, dtype=np.float32) * 127) / 127  # [k, n]: the dequantized weights
    assert np.abs(got - a @ deq).max() <= 0.02 * np.abs(a @ deq).max()


def test_bad_shapes_are_refused():
    wq = _core.quantize(np.ones((8, 64), np.float32), "q4_0")
    with pytest.raises(ValueError, match="multiple of 32|q4_0 blocks"):
        _core._gemm(wq, np.ones((2, 48), np.float32), "q4_0")
    with pytest.raises(ValueError, match="q4_0 blocks"):
        _core._gemm(wq, np.ones((2, 96), np.float32), "q4_0")


@pytest.mark.parametrize("arch", ["tiny", "alt"])
def test_prompt_processing_with_our_gemm_equals_ggml(arch, tiny_checkpoint, alt_checkpoint, convert_tiny):
    """Q4_0 decoders process a 77-token prompt (micro-batches of 64 and 13 rows) through our GEMM, and
    through ggml's kernel with AUTOGLM_GEMM=ggml: the same int8 dot products and F16-rounded scales, so
    the logits agree to float rounding (measured: identical)."""
    text, _ = convert_tiny(tiny_checkpoint if arch == "tiny" else alt_checkpoint, "q4_0", "f16")
    ours, ggml = prompt_logits(text, None), prompt_logits(text, "ggml")
    assert np.abs(ours - ggml).max() <= 1e-4 * np.abs(ggml).max()


def test_importance_matrix_sees_every_matmul_of_a_q4_0_model(tiny_checkpoint, convert_tiny):
    """While an importance matrix is collected the graphs keep ggml's MUL_MAT nodes (the collector reads
    their activations), so a Q4_0 model's statistics are as complete as an F32 one's."""
    stats = {}
    for outtype in ("f32", "q4_0"):
        text, _ = convert_tiny(tiny_checkpoint, outtype, "f16")
        model = _core.TextModel(str(text), n_threads=2)
        s = _core.Session(model, n_ctx=256, kv_type="f32")
        s.imatrix_start()
        s.imatrix_eval(list(range(5, 85)))  # 80 tokens: one micro-batch of >= 32 rows
        stats[outtype] = s.imatrix_stats()
        s.imatrix_stop()
    assert set(stats["q4_0"]) == set(stats["f32"]) and len(stats["f32"]) >= 6
    for name, (_, count) in stats["f32"].items():
        assert stats["q4_0"][name][1] == count, name
