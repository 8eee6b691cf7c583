"""Our decode GEMV for Q4_K weights in ggml's repacked layout (native/src/gemv_q4_k.h), each ISA
variant: against exact integer arithmetic, bit for bit against our prompt GEMM, and in decoders
decoding token by token against ggml's matrix-vector kernel on the same repacked weights."""

from __future__ import annotations

import numpy as np
import pytest

from _gemm_util import ISAS, k_quant_models, need_isa, prompt_logits, q4_k_reference
from autoglm_gguf import _core

pytestmark = pytest.mark.skipif(not _core._gemm_available(), reason="the kernel needs AVX2, FMA and F16C")

# N x K: one panel of one super-block; several panels that split unevenly between threads; the 9B
# shape's widths (4,096 and the fused gate/up's 27,392 rows cut to a slice)
SHAPES = [(8, 256), (16, 512), (24, 768), (40, 1280), (72, 256), (8, 4096), (1032, 4096)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n,k", SHAPES)
def test_matches_exact_integer_arithmetic_and_the_prompt_gemm(isa, n, k):
    need_isa(isa)
    rng = np.random.default_rng(n + k)
    w = (rng.standard_normal((n, k)) * rng.uniform(0.2, 3, (n, 1))).astype(np.float32)
    w[0, :64] += 4.0  # a lopsided sub-block pair: large mins
    w[-1, -256:] = np.linspace(-1, 3, 256)  # the nibble range's extremes, 0 and 15, with a large min
    w[n // 2, 32:64] *= 50  # one sub-block's scale far above the rest: the 6-bit scales' full range
    x = (rng.standard_normal(k) * 5).astype(np.float32)
    x[:256] = 0.0  # an all-zero super-block of activations: scale 0
    if k > 256:
        x[-256:] = 127.0 * np.sign(rng.standard_normal(256))  # the extremes of int8
        x[-7] = -200.0  # the largest magnitude negative: the other sign of the scale
    wq = _core.quantize(w, "q4_k")
    ref = q4_k_reference(wq, x[None])[0]
    row = _core._gemm(wq, x[None], "q4_k", 1, "avx2")[0]
    for threads in (1, 2, 3):
        got = _core._gemv_q4_k(wq, x, threads, isa)
        assert got.shape == (n,) and got.dtype == np.float32
        # F32 accumulation over K/64 sub-block pairs vs the exact sum
        assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), threads
        # each column is the prompt GEMM's F32 chain: a token gets the same bits decoded or in a batch,
        # on every ISA (the GEMM's variants agree bit for bit: test_gemm_q4_k.py)
        assert np.array_equal(got, row), (threads, np.abs(got - row).max())


def test_bad_shapes_are_refused():
    wq = _core.quantize(np.ones((8, 512), np.float32), "q4_k")
    with pytest.raises(ValueError, match="q4_K blocks"):
        _core._gemv_q4_k(wq, np.ones(256, np.float32))
    with pytest.raises(ValueError, match="multiple of 8"):
        _core._gemv_q4_k(_core.quantize(np.ones((12, 256), np.float32), "q4_k"), np.ones(256, np.float32))
    with pytest.raises(ValueError, match="cannot run the 'avx9000' kernels"):
        _core._gemv_q4_k(wq, np.ones(512, np.float32), 1, "avx9000")


@pytest.fixture(scope="module")
def k512_models(tmp_path_factory):
    """Another width and head layout than k256_models: 512 wide, 8 heads sharing 2 KV heads, an FFN of
    768 (3 super-blocks per row of ffn_down)."""
    return k_quant_models(tmp_path_factory.mktemp("k512"), {"hidden_size": 512, "intermediate_size": 768,
                                                            "num_hidden_layers": 2, "num_attention_heads": 8,
                                                            "num_key_value_heads": 2})


@pytest.mark.parametrize("models", ["k256_models", "k512_models"])
def test_decoding_with_our_gemv_is_as_accurate_as_ggmls_kernel(models, request):
    """24 tokens decoded one by one through our GEMV and through ggml's repacked kernel
    (AUTOGLM_GEMM=ggml), the profiles showing which ran. ggml's matrix-vector kernel sums a whole
    super-block before its fma where ours (and both GEMMs) add each sub-block pair, so the logits differ
    in rounding: ours are as accurate as ggml's against the F16 file, and the difference between the
    two is a small part of the quantization error (a misread scale or nibble would be comparable)."""
    f16, q = request.getfixturevalue(models)
    prof_ours: list[str] = []
    prof_ggml: list[str] = []
    ours = prompt_logits(q, None, n_batch=1, n_tokens=24, profile=prof_ours)
    ggml = prompt_logits(q, "ggml", n_batch=1, n_tokens=24, profile=prof_ggml)
    assert "GEMV q4_K (ours)" in prof_ours[0] and "GEMV q4_K" not in prof_ggml[0]
    assert "MUL_MAT q4_K CPU_REPACK (vector)" in prof_ggml[0]
    assert "MUL_MAT q4_K CPU_REPACK (vector)" not in prof_ours[0]
    assert "GEMV q6_K (ours)" in prof_ours[0]  # the output head (Q6_K in the Q4_K_M mix)
    ref = prompt_logits(f16, None, n_batch=1, n_tokens=24)
    err_ours, err_ggml = np.abs(ours - ref).max(), np.abs(ggml - ref).max()
    assert err_ours <= 1.1 * err_ggml + 1e-3 * np.abs(ref).max()
    assert np.abs(ours - ggml).max() <= 0.25 * err_ggml
    # typically the rounding does not differ at all (measured: median difference 0 and 1e-5 where the
    # median quantization error is 4 and 7): a misread block would move every logit
    assert np.median(np.abs(ours - ggml)) <= 0.01 * np.median(np.abs(ggml - ref))
    # the AVX2 variant (AUTOGLM_GEMM_ISA=avx2) decodes to the same bits as the machine's best
    if _core._gemm_isas() != ["avx2"]:
        prof_avx2: list[str] = []
        avx2 = prompt_logits(q, None, isa="avx2", n_batch=1, n_tokens=24, profile=prof_avx2)
        assert "GEMV q4_K (ours)" in prof_avx2[0]
        assert np.array_equal(avx2, ours), np.abs(avx2 - ours).max()
