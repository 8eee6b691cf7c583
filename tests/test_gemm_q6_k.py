"""The Q6_K prompt GEMM (native/src/gemm_q6_k.h, every instruction-set variant) against exact integer
arithmetic: Q6_K weights from ggml's own quantizer, activations quantized per 256 as ggml's Q8_K, per
row, column and super-block the exact sum over the 16-element sub-blocks of sc x q x (u - 32), scaled
by the F16 super-block scale; bit for bit against the decode GEMV (gemv_q6_k.h); and in a decoder
graph against ggml's own Q6_K kernel."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from _gemm_util import ISAS, check_against_ggml, check_isas_agree, need_isa, prompt_logits, q6_k_reference
from autoglm_gguf import _core
from autoglm_gguf.quantize import quantize_gguf

pytestmark = pytest.mark.skipif(not _core._gemm_available(), reason="the kernel needs AVX2, FMA and F16C")


def _case(m: int, n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * rng.uniform(0.2, 3, (n, 1))).astype(np.float32)
    w[0, :16] *= 40  # one sub-block's scale far above the rest: the int8 scales' full range
    w[-1, -256:] = np.linspace(-1, 1, 256)  # the 6-bit range's extremes, 0 and 63
    a = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10, (m, 1))).astype(np.float32)
    a[0, :256] = 0.0  # an all-zero super-block: scale 0
    if m > 1:
        a[1, 7] = -50.0  # the largest magnitude negative: the other sign of the scale
        a[1, -256:] = 127.0 * np.sign(rng.standard_normal(256))  # the extremes of int8: the 16-bit sums' bound
    return _core.quantize(w, "q6_k"), a


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m,n,k", [(1, 8, 256), (3, 13, 512), (5, 72, 256), (64, 40, 1024), (130, 24, 768)])
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_exact_integer_arithmetic_and_the_decode_gemv(isa, m, n, k, threads):
    need_isa(isa)
    wq, a = _case(m, n, k, m * 1000 + n * 10 + k)
    got = _core._gemm(wq, a, "q6_k", threads, isa, tiles="int8")
    ref = q6_k_reference(wq, a)
    assert got.shape == (m, n)
    # F32 accumulation over K/256 super-blocks of exact integer sums
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    # and it is the matrix product with the dequantized weights, off by at most the activations' rounding
    deq = dequantize(wq, GGMLQuantizationType.Q6_K).reshape(n, k).astype(np.float64)
    prod = a.astype(np.float64) @ deq.T
    half_step = np.abs(a).reshape(m, k // 256, 256).max(axis=2) / 254
    bound = np.einsum("mb,nb->mn", half_step, np.abs(deq).reshape(n, k // 256, 256).sum(axis=2))
    assert (np.abs(got - prod) <= bound * 1.001 + 1e-5 * np.abs(prod).max()).all()
    # the decode GEMV's integers and F32 steps: a token gets the same bits decoded or in a prompt
    for r in {0, m - 1}:
        row = _core._gemv(wq, a[r], "q6_k", threads, isa)
        assert np.array_equal(got[r], row), np.abs(got[r] - row).max()


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "avx2"])
def test_every_isa_variant_equals_the_avx2_kernel_bit_for_bit(isa):
    need_isa(isa)
    for m, n, k in [(1, 8, 256), (5, 13, 512), (9, 24, 256), (33, 40, 1024), (130, 17, 256), (8, 72, 2048)]:
        wq, a = _case(m, n, k, 3 * m + n + k)
        for threads in (1, 2, 3):
            want = _core._gemm(wq, a, "q6_k", threads, "avx2")
            got = _core._gemm(wq, a, "q6_k", threads, isa, tiles="int8")
            assert np.array_equal(got, want), (m, n, k, threads, np.abs(got - want).max())


def test_bad_shapes_are_refused():
    wq = _core.quantize(np.ones((8, 256), np.float32), "q6_k")
    with pytest.raises(ValueError, match="multiple of 256|q6_k blocks"):
        _core._gemm(wq, np.ones((2, 128), np.float32), "q6_k")
    with pytest.raises(ValueError, match="q6_k blocks"):
        _core._gemm(wq, np.ones((2, 512), np.float32), "q6_k")


@pytest.fixture(scope="module")
def q6_k_file(k256_models, tmp_path_factory):
    q = tmp_path_factory.mktemp("q6k") / "q6_k.gguf"
    quantize_gguf(k256_models[0], q, "q6_k", progress=False)
    return q


def test_prompt_processing_with_our_gemm_is_as_accurate_as_ggmls(k256_models, q6_k_file):
    """A Q6_K file's 64-row micro-batch through our GEMM (the profile shows it ran, and ggml's Q6_K
    kernel did not) and through ggml's (AUTOGLM_GEMM=ggml), whose F32 steps differ (8 partial sums per
    row): held to check_against_ggml's accuracy rule against the F16 file."""
    profile: list[str] = []
    prompt_logits(q6_k_file, None, n_tokens=64, profile=profile, tiles="int8")  # (AMX: our int8 path)
    assert "GEMM q6_K (ours)" in profile[0] and "MUL_MAT q6_K" not in profile[0]
    check_against_ggml(q6_k_file, k256_models[0], mirrors_ggml_order=False)


def test_a_models_logits_do_not_depend_on_the_instruction_set(q6_k_file):
    check_isas_agree(q6_k_file)
