"""The Q4_K prompt GEMM (native/src/gemm_q4_k.h, every instruction-set variant) against exact integer arithmetic: Q4_K weights
from ggml's own quantizer, activations quantized per 256 as ggml's Q8_K (scale from the first element of
largest magnitude, sign included; q = round-half-even(x * -127 / that element); d = 1 / that scale in
F32), int32 sums per 32-element sub-block weighted by the 6-bit scales and mins, scaled by the F16
super-block scales; and in a decoder graph against ggml's own Q4_K kernel."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

import _gemm_util
from _gemm_util import ISAS, check_against_ggml, check_isas_agree, ggml_avx2_kernels, need_isa, q4_k_reference
from autoglm_gguf import _core
from autoglm_gguf.quantize import quantize_gguf

pytestmark = pytest.mark.skipif(not _core._gemm_available(), reason="the kernel needs AVX2, FMA and F16C")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m,n,k", [(1, 8, 256), (3, 13, 512), (5, 72, 256), (64, 40, 1024), (130, 24, 768)])
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_exact_integer_arithmetic(isa, m, n, k, threads):
    need_isa(isa)
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    w = (rng.standard_normal((n, k)) * rng.uniform(0.2, 3, (n, 1))).astype(np.float32)
    w[0, :64] += 4.0  # a lopsided sub-block pair: large mins
    a = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10, (m, 1))).astype(np.float32)
    a[0, :256] = 0.0  # an all-zero super-block: scale 0
    if m > 1:
        a[1, 7] = -50.0  # the largest magnitude negative: the other sign of the scale
    wq = _core.quantize(w, "q4_k")
    got = _core._gemm(wq, a, "q4_k", threads, isa, tiles="int8")
    ref = q4_k_reference(wq, a)
    assert got.shape == (m, n)
    # F32 accumulation over K/256 super-blocks vs the exact sum
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    # and it is the matrix product with the dequantized weights, off by at most the activations' rounding
    # (half a step, max|x| / 254 per super-block, times the weights' magnitudes)
    deq = dequantize(wq, GGMLQuantizationType.Q4_K).reshape(n, k).astype(np.float64)
    prod = a.astype(np.float64) @ deq.T
    half_step = np.abs(a).reshape(m, k // 256, 256).max(axis=2) / 254
    bound = np.einsum("mb,nb->mn", half_step, np.abs(deq).reshape(n, k // 256, 256).sum(axis=2))
    assert (np.abs(got - prod) <= bound * 1.001 + 1e-5 * np.abs(prod).max()).all()


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "avx2"])
def test_every_isa_variant_equals_the_avx2_kernel_bit_for_bit(isa):
    """The same integers and F32 steps on every instruction set (see test_gemm_block32.py), over the
    edges of the 16-column groups, the row tiles and the threads' shares."""
    need_isa(isa)
    rng = np.random.default_rng(11)
    for m, n, k in [(1, 8, 256), (5, 13, 512), (9, 24, 256), (33, 40, 1024), (130, 17, 256), (8, 72, 2048)]:
        w = (rng.standard_normal((n, k)) * rng.uniform(0.2, 3, (n, 1))).astype(np.float32)
        a = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10, (m, 1))).astype(np.float32)
        wq = _core.quantize(w, "q4_k")
        for threads in (1, 2, 3):
            want = _core._gemm(wq, a, "q4_k", threads, "avx2")
            got = _core._gemm(wq, a, "q4_k", threads, isa, tiles="int8")
            assert np.array_equal(got, want), (m, n, k, threads, np.abs(got - want).max())


@pytest.mark.parametrize("qtype", ["q4_k", "q5_k", "q6_k"])
def test_bf16_tiles_round_only_the_operands(qtype):
    """The K-quants on BF16 tiles (_gemm_util.check_bf16_tiles): each weight as ggml dequantizes it
    (Q4_K, Q5_K: d sc_j u - dmin m_j; Q6_K: d sc (u - 32), a scale per 16 k), rounded to BF16. Over the
    edges of the column groups, the row tiles, the blocks of 512 k and the threads' shares."""
    need_isa("amx")
    rng = np.random.default_rng(5)
    for m, n, k in [(1, 8, 256), (7, 13, 512), (33, 40, 768), (130, 17, 256), (96, 600, 1280)]:
        w = (rng.standard_normal((n, k)) * rng.uniform(0.2, 3, (n, 1))).astype(np.float32)
        w[0, :64] += 4.0  # a lopsided sub-block pair: large mins
        a = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10, (m, 1))).astype(np.float32)
        wq = _core.quantize(w, qtype)
        deq = dequantize(wq, getattr(GGMLQuantizationType, qtype.upper())).reshape(n, k)
        for threads in (1, 2, 3):
            _gemm_util.check_bf16_tiles(wq, qtype, a, deq, threads)


def test_bad_shapes_are_refused():
    wq = _core.quantize(np.ones((8, 256), np.float32), "q4_k")
    with pytest.raises(ValueError, match="multiple of 256|q4_k blocks"):
        _core._gemm(wq, np.ones((2, 128), np.float32), "q4_k")
    with pytest.raises(ValueError, match="q4_k blocks"):
        _core._gemm(wq, np.ones((2, 512), np.float32), "q4_k")


def test_prompt_processing_with_our_gemm_matches_ggml(k256_models, tmp_path):
    """The 64-row micro-batch runs through our Q4_K GEMM, reading ggml's repacked layout, and through
    ggml's kernel with AUTOGLM_GEMM=ggml: the same Q8_K activations and integer sums, and against ggml's
    AVX2 kernel the same F32 operations in the same order (gemm_q4_k.cpp), so the logits are equal. With
    the F32 steps per super-block instead, a float difference of 1e-6 in layer 0 flipped one
    activation's int8 rounding in layer 1 and moved a logit by 0.46: quantized paths amplify any
    difference, and this test saw it. The file is Q4_K throughout (the Q4_K_M mix's Q6_K matrices take
    our Q6_K GEMM, whose F32 steps are not ggml's); the mix itself is held to the accuracy rule."""
    from gguf import GGMLQuantizationType, GGUFReader

    f16, q_mix = k256_models
    q = tmp_path / "q4_k_pure.gguf"
    quantize_gguf(f16, q, "q4_k_m", pure=True, output_tensor_type="q4_k", progress=False)
    assert {t.tensor_type for t in GGUFReader(q).tensors if t.name.startswith("blk.") and t.name.endswith("_v.weight")} == {
        GGMLQuantizationType.Q4_K}
    check_against_ggml(q, f16, mirrors_ggml_order=ggml_avx2_kernels())
    check_against_ggml(q_mix, f16, mirrors_ggml_order=False)


def test_a_models_logits_do_not_depend_on_the_instruction_set(k256_models):
    check_isas_agree(k256_models[1])


def test_bf16_tiles_in_k_quant_models_are_as_accurate_as_the_int8_ones(k256_models, k256_q5_k_m):
    """The Q4_K_M file (its Q4_K matrices in ggml's repacked layout, its Q6_K ones in the GGUF's) and the
    Q5_K_M one on BF16 tiles (_gemm_util.check_bf16_tiles_in_model)."""
    f16, q4_k_m = k256_models
    _gemm_util.check_bf16_tiles_in_model(q4_k_m, f16, ["q4_K", "q6_K"])
    _gemm_util.check_bf16_tiles_in_model(k256_q5_k_m, f16, ["q5_K"])
