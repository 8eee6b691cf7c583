"""Our decode GEMV for Q6_K weights in the GGUF layout (native/src/gemv_q6_k.h), each ISA variant:
against exact integer arithmetic on ggml's own Q6_K blocks and Q8_K activations, the variants bit for
bit against each other, and in decoders decoding token by token against ggml's kernel."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from _gemm_util import ISAS, need_isa, prompt_logits, q6_k_reference
from autoglm_gguf import _core
from autoglm_gguf.quantize import quantize_gguf

pytestmark = pytest.mark.skipif(not _core._gemm_available(), reason="the kernel needs AVX2, FMA and F16C")


# N x K: fewer rows than a group of 8, groups that split unevenly between threads and end short, the
# 9B shapes' widths (4,096; the output head's rows cut to a slice)
SHAPES = [(1, 256), (13, 512), (24, 768), (77, 1280), (8, 4096), (1030, 4096)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n,k", SHAPES)
def test_matches_exact_integer_arithmetic(isa, n, k):
    need_isa(isa)
    rng = np.random.default_rng(n + k)
    w = (rng.standard_normal((n, k)) * rng.uniform(0.2, 3, (n, 1))).astype(np.float32)
    w[0, :16] *= 40  # one sub-block's scale far above the rest: the int8 scales' full range
    w[-1, -256:] = np.linspace(-1, 1, 256)  # the 6-bit range's extremes, 0 and 63
    x = (rng.standard_normal(k) * 5).astype(np.float32)
    x[:256] = 0.0  # an all-zero super-block of activations: scale 0
    if k > 256:
        x[-256:] = 127.0 * np.sign(rng.standard_normal(256))  # the extremes of int8
        x[-3] = -200.0  # the largest magnitude negative: the other sign of the activations' scale
    wq = _core.quantize(w, "q6_k")
    ref = q6_k_reference(wq, x[None])[0]
    prod = dequantize(wq, GGMLQuantizationType.Q6_K).reshape(n, k).astype(np.float64) @ x.astype(np.float64)
    for threads in (1, 2, 3):
        got = _core._gemv(wq, x, "q6_k", threads, isa)
        assert got.shape == (n,) and got.dtype == np.float32
        # F32 accumulation over K/256 super-blocks vs the exact sum
        assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), threads
        # and the product with the dequantized weights, but for the activations' int8 rounding
        assert np.abs(got - prod).max() <= 0.02 * np.abs(prod).max() + 1e-3


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "avx2"])
def test_every_isa_variant_equals_the_avx2_kernel_bit_for_bit(isa):
    """The same integers and F32 steps on every instruction set: a token's logits do not depend on it."""
    need_isa(isa)
    rng = np.random.default_rng(5)
    for n, k in [(9, 256), (40, 1024), (17, 2048)]:
        w = (rng.standard_normal((n, k)) * rng.uniform(0.2, 3, (n, 1))).astype(np.float32)
        x = (rng.standard_normal(k) * rng.uniform(0.1, 10)).astype(np.float32)
        wq = _core.quantize(w, "q6_k")
        for threads in (1, 2):
            want = _core._gemv(wq, x, "q6_k", threads, "avx2")
            got = _core._gemv(wq, x, "q6_k", threads, isa)
            assert np.array_equal(got, want), (n, k, threads, np.abs(got - want).max())


def test_bad_shapes_are_refused():
    wq = _core.quantize(np.ones((8, 512), np.float32), "q6_k")
    with pytest.raises(ValueError, match="q6_k blocks"):
        _core._gemv(wq, np.ones(256, np.float32), "q6_k")
    with pytest.raises(ValueError, match="cannot run the 'avx9000' kernels"):
        _core._gemv(wq, np.ones(512, np.float32), "q6_k", 1, "avx9000")


def test_decoding_a_q6_k_file_is_as_accurate_as_ggmls_kernel(k256_models, tmp_path):
    """A Q6_K file (every matrix Q6_K but the Q8_0 fallbacks) decoded token by token through our GEMV
    and through ggml's (AUTOGLM_GEMM=ggml), the profiles showing which ran. ggml's kernel keeps 8
    partial F32 sums per row where ours converts each super-block's exact integer sum, so the logits
    differ in rounding: ours as accurate as ggml's against the F16 file, and the two far closer to
    each other than to it."""
    f16, _ = k256_models
    q = tmp_path / "q6_k.gguf"
    quantize_gguf(f16, q, "q6_k", progress=False)
    prof_ours: list[str] = []
    prof_ggml: list[str] = []
    ours = prompt_logits(q, None, n_batch=1, n_tokens=24, profile=prof_ours)
    ggml = prompt_logits(q, "ggml", n_batch=1, n_tokens=24, profile=prof_ggml)
    assert "GEMV q6_K (ours)" in prof_ours[0] and "GEMV q6_K" not in prof_ggml[0]
    assert "MUL_MAT q6_K (vector)" in prof_ggml[0] and "MUL_MAT q6_K (vector)" not in prof_ours[0]
    ref = prompt_logits(f16, None, n_batch=1, n_tokens=24)
    err_ours, err_ggml = np.abs(ours - ref).max(), np.abs(ggml - ref).max()
    assert err_ours <= 1.1 * err_ggml + 1e-3 * np.abs(ref).max()
    assert np.median(np.abs(ours - ggml)) <= 0.05 * np.median(np.abs(ggml - ref))
    if _core._gemm_isas() != ["avx2"]:
        avx2 = prompt_logits(q, None, isa="avx2", n_batch=1, n_tokens=24)
        assert np.array_equal(avx2, ours), np.abs(avx2 - ours).max()
