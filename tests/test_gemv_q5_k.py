"""Our decode GEMV for Q5_K weights in the GGUF layout (native/src/gemv_q5_k.h), each ISA variant:
against exact integer arithmetic on ggml's own Q5_K blocks and Q8_K activations, bit for bit against
the prompt GEMM's one-row product and across the variants, and in a decoder decoding token by token
against ggml's kernel."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from _gemm_util import ISAS, need_isa, prompt_logits, q4_k_reference
from autoglm_gguf import _core

pytestmark = pytest.mark.skipif(not _core._gemm_available(), reason="the kernel needs AVX2, FMA and F16C")

# N x K: fewer rows than a group of 8, groups that split unevenly between threads and end short, the
# 9B shapes' widths (4,096)
SHAPES = [(1, 256), (13, 512), (24, 768), (77, 1280), (8, 4096), (1030, 4096)]


def _case(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * rng.uniform(0.2, 3, (n, 1))).astype(np.float32)
    w[0, :64] += 4.0  # a lopsided sub-block pair: large mins
    w[-1, :32] *= 30  # one sub-block's scale far above the rest: the 6-bit scales' full range
    w[-1, -256:] = np.linspace(-1, 1, 256)  # the 5-bit range's extremes, 0 and 31
    x = (rng.standard_normal(k) * 5).astype(np.float32)
    x[:256] = 0.0  # an all-zero super-block of activations: scale 0
    if k > 256:
        x[-256:] = 127.0 * np.sign(rng.standard_normal(256))  # the extremes of int8
        x[-3] = -200.0  # the largest magnitude negative: the other sign of the activations' scale
    return _core.quantize(w, "q5_k"), x


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n,k", SHAPES)
def test_matches_exact_integer_arithmetic_and_the_prompt_gemm(isa, n, k):
    need_isa(isa)
    wq, x = _case(n, k, n + k)
    ref = q4_k_reference(wq, x[None], "q5_k")[0]
    prod = dequantize(wq, GGMLQuantizationType.Q5_K).reshape(n, k).astype(np.float64) @ x.astype(np.float64)
    gemm = _core._gemm(wq, x[None], "q5_k", 1, isa)[0]
    for threads in (1, 2, 3):
        got = _core._gemv(wq, x, "q5_k", threads, isa)
        assert got.shape == (n,) and got.dtype == np.float32
        # F32 accumulation over K/256 super-blocks vs the exact sum
        assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), threads
        # and the product with the dequantized weights, but for the activations' int8 rounding
        assert np.abs(got - prod).max() <= 0.02 * np.abs(prod).max() + 1e-3
        # the prompt GEMM's integers and F32 steps: a token gets the same bits decoded or in a prompt
        assert np.array_equal(got, gemm), (threads, np.abs(got - gemm).max())


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "avx2"])
def test_every_isa_variant_equals_the_avx2_kernel_bit_for_bit(isa):
    need_isa(isa)
    for n, k in [(9, 256), (40, 1024), (17, 2048)]:
        wq, x = _case(n, k, 3 * n + k)
        for threads in (1, 2):
            want = _core._gemv(wq, x, "q5_k", threads, "avx2")
            got = _core._gemv(wq, x, "q5_k", threads, isa)
            assert np.array_equal(got, want), (n, k, threads, np.abs(got - want).max())


def test_bad_shapes_are_refused():
    wq = _core.quantize(np.ones((8, 512), np.float32), "q5_k")
    with pytest.raises(ValueError, match="q5_k blocks"):
        _core._gemv(wq, np.ones(256, np.float32), "q5_k")
    with pytest.raises(ValueError, match="cannot run the 'avx9000' kernels"):
        _core._gemv(wq, np.ones(512, np.float32), "q5_k", 1, "avx9000")


def test_decoding_a_q5_k_m_file_is_as_accurate_as_ggmls_kernel(k256_models, k256_q5_k_m):
    """24 tokens decoded one by one through our GEMV and through ggml's (AUTOGLM_GEMM=ggml), the
    profiles showing which ran. ggml's kernel keeps 8 partial F32 sums per row where ours converts each
    super-block's exact integers, so the logits differ in rounding: ours as accurate as ggml's against
    the F16 file, and the two far closer to each other than to it (a misread block would move every
    logit)."""
    prof_ours: list[str] = []
    prof_ggml: list[str] = []
    ours = prompt_logits(k256_q5_k_m, None, n_batch=1, n_tokens=24, profile=prof_ours)
    ggml = prompt_logits(k256_q5_k_m, "ggml", n_batch=1, n_tokens=24, profile=prof_ggml)
    assert "GEMV q5_K (ours)" in prof_ours[0] and "GEMV q5_K" not in prof_ggml[0]
    assert "MUL_MAT q5_K (vector)" in prof_ggml[0] and "MUL_MAT q5_K" not in prof_ours[0]
    ref = prompt_logits(k256_models[0], None, n_batch=1, n_tokens=24)
    err_ours, err_ggml = np.abs(ours - ref).max(), np.abs(ggml - ref).max()
    assert err_ours <= 1.1 * err_ggml + 1e-3 * np.abs(ref).max()
    assert np.median(np.abs(ours - ggml)) <= 0.05 * np.median(np.abs(ggml - ref))
    if _core._gemm_isas() != ["avx2"]:
        avx2 = prompt_logits(k256_q5_k_m, None, isa="avx2", n_batch=1, n_tokens=24)
        assert np.array_equal(avx2, ours), np.abs(avx2 - ours).max()
