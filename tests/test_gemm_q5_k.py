"""The Q5_K prompt GEMM (native/src/gemm_q5_k.h, every instruction-set variant) against exact integer
arithmetic: Q5_K weights from ggml's own quantizer, activations quantized per 256 as ggml's Q8_K, per
row, column and super-block the integer sums of the 32-element sub-blocks weighted by the 6-bit scales
(and the activations' sub-block sums by the mins), scaled by the F16 super-block scales; and in a
decoder graph against ggml's own Q5_K kernel."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from _gemm_util import ISAS, check_against_ggml, check_isas_agree, need_isa, prompt_logits, q4_k_reference
from autoglm_gguf import _core

pytestmark = pytest.mark.skipif(not _core._gemm_available(), reason="the kernel needs AVX2, FMA and F16C")


def _weights(rng, n: int, k: int) -> np.ndarray:
    w = (rng.standard_normal((n, k)) * rng.uniform(0.2, 3, (n, 1))).astype(np.float32)
    w[0, :64] += 4.0  # a lopsided sub-block pair: large mins
    w[-1, :32] *= 30  # one sub-block's scale far above the rest: the 6-bit scales' full range
    return w


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m,n,k", [(1, 8, 256), (3, 13, 512), (5, 72, 256), (64, 40, 1024), (130, 24, 768)])
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_exact_integer_arithmetic(isa, m, n, k, threads):
    need_isa(isa)
    rng = np.random.default_rng(m * 1000 + n * 10 + k + 7)
    w = _weights(rng, n, k)
    a = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10, (m, 1))).astype(np.float32)
    a[0, :256] = 0.0  # an all-zero super-block: scale 0
    if m > 1:
        a[1, 7] = -50.0  # the largest magnitude negative: the other sign of the scale
        a[1, -256:] = 127.0 * np.sign(rng.standard_normal(256))  # the extremes of int8
    wq = _core.quantize(w, "q5_k")
    got = _core._gemm(wq, a, "q5_k", threads, isa, tiles="int8")
    ref = q4_k_reference(wq, a, "q5_k")
    assert got.shape == (m, n)
    # F32 accumulation over K/256 super-blocks (each super-block's integer sums converted once) vs the
    # exact sum
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    # and it is the matrix product with the dequantized weights, off by at most the activations' rounding
    deq = dequantize(wq, GGMLQuantizationType.Q5_K).reshape(n, k).astype(np.float64)
    prod = a.astype(np.float64) @ deq.T
    half_step = np.abs(a).reshape(m, k // 256, 256).max(axis=2) / 254
    bound = np.einsum("mb,nb->mn", half_step, np.abs(deq).reshape(n, k // 256, 256).sum(axis=2))
    assert (np.abs(got - prod) <= bound * 1.001 + 1e-5 * np.abs(prod).max()).all()


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "avx2"])
def test_every_isa_variant_equals_the_avx2_kernel_bit_for_bit(isa):
    """The same integers and F32 steps on every instruction set, over the edges of the 16-column
    groups, the row tiles and the threads' shares."""
    need_isa(isa)
    rng = np.random.default_rng(12)
    for m, n, k in [(1, 8, 256), (5, 13, 512), (9, 24, 256), (33, 40, 1024), (130, 17, 256), (8, 72, 2048)]:
        wq = _core.quantize(_weights(rng, n, k), "q5_k")
        a = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10, (m, 1))).astype(np.float32)
        for threads in (1, 2, 3):
            want = _core._gemm(wq, a, "q5_k", threads, "avx2")
            got = _core._gemm(wq, a, "q5_k", threads, isa, tiles="int8")
            assert np.array_equal(got, want), (m, n, k, threads, np.abs(got - want).max())


def test_bad_shapes_are_refused():
    wq = _core.quantize(np.ones((8, 256), np.float32), "q5_k")
    with pytest.raises(ValueError, match="multiple of 256|q5_k blocks"):
        _core._gemm(wq, np.ones((2, 128), np.float32), "q5_k")
    with pytest.raises(ValueError, match="q5_k blocks"):
        _core._gemm(wq, np.ones((2, 512), np.float32), "q5_k")


def test_prompt_processing_with_our_gemm_is_as_accurate_as_ggmls(k256_models, k256_q5_k_m):
    """The 64-row micro-batch of a Q5_K_M decoder through our GEMM (the profile shows it ran, and ggml's
    Q5_K kernel did not) and through ggml's kernel (AUTOGLM_GEMM=ggml): the same Q8_K activations and
    integers, F32 steps that differ (ggml keeps 8 partial sums per row), so the logits are held to
    check_against_ggml's accuracy rule against the F16 file."""
    profile: list[str] = []
    prompt_logits(k256_q5_k_m, None, n_tokens=64, profile=profile, tiles="int8")  # one micro-batch of 64 rows (AMX: our int8 path)
    assert "GEMM q5_K (ours)" in profile[0] and "MUL_MAT q5_K" not in profile[0]
    check_against_ggml(k256_q5_k_m, k256_models[0], mirrors_ggml_order=False)


def test_a_models_logits_do_not_depend_on_the_instruction_set(k256_q5_k_m):
    check_isas_agree(k256_q5_k_m)
