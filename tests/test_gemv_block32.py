"""Our decode GEMV for GGUF-layout block-32 rows (native/src/gemv_block32.h: Q8_0, Q5_0, Q4_0, Q5_1, Q4_1), each
ISA variant: against exact integer arithmetic, bit for bit against our prompt GEMM, and in decoders
decoding token by token against ggml's kernels (a Q8_0 file, and a Q4_K_M one, whose matrices fall
back to Q5_0 and Q8_0 where K is no multiple of 256: all of them in the tiny model, ffn_down in the
9B)."""

from __future__ import annotations

import numpy as np
import pytest

from _gemm_util import ISAS, block32_reference, need_isa, prompt_logits
from autoglm_gguf import _core
from autoglm_gguf.quantize import quantize_gguf

pytestmark = pytest.mark.skipif(not _core._gemm_available(), reason="the kernel needs AVX2, FMA and F16C")

# N x K: one row; a group of 8 rows and a partial one; groups that do not split evenly between
# threads; the 9B shape's FFN width (13,696 = 428 blocks)
SHAPES = [(1, 32), (8, 32), (13, 96), (24, 160), (67, 256), (8, 4096), (300, 13696)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", ["q8_0", "q5_0", "q4_0", "q5_1", "q4_1"])
@pytest.mark.parametrize("n,k", SHAPES)
def test_matches_exact_integer_arithmetic_and_the_prompt_gemm(isa, qtype, n, k):
    need_isa(isa)
    rng = np.random.default_rng(n * 7 + k)
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[-1, :32] = np.linspace(-1, 1, 32)  # the extremes of the integer range: -127/127, -16/15, -8/7
    w[0, -32:] += 3.0  # a block far from zero: the affine types' large m
    x = (rng.standard_normal(k) * 5).astype(np.float32)
    x[:32] = 0.0  # an all-zero activation block: scale 0
    x[-32:] = 127.0 * np.sign(rng.standard_normal(32))  # activations at +-127, the sign trick's edge
    wq = _core.quantize(w, qtype)
    ref = block32_reference(wq, qtype, x[None])[0]
    for threads in (1, 2, 3):
        got = _core._gemv(wq, x, qtype, threads, isa)
        assert got.shape == (n,) and got.dtype == np.float32
        assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), threads
        # the prompt GEMM's F32 chain: a token gets the same bits decoded or in a batch
        row = _core._gemm(wq, x[None], qtype, threads, "avx2")[0]
        assert np.array_equal(got, row), (threads, np.abs(got - row).max())


def test_bad_inputs_are_refused():
    wq = _core.quantize(np.ones((8, 64), np.float32), "q8_0")
    with pytest.raises(ValueError, match="q8_0 blocks"):
        _core._gemv(wq, np.ones(96, np.float32), "q8_0")
    with pytest.raises(ValueError, match="no GGUF-layout kernel for iq4_nl"):
        _core._gemv(_core.quantize(np.ones((8, 64), np.float32), "iq4_nl"), np.ones(64, np.float32), "iq4_nl")
    with pytest.raises(ValueError, match="cannot run the 'avx9000' kernels"):
        _core._gemv(wq, np.ones(64, np.float32), "q8_0", 1, "avx9000")


@pytest.mark.parametrize("qtype,families,x16", [("q8_0", ["GEMV q8_0 (ours)"], []),
                                                ("q4_k_m", ["GEMV q5_0 (ours)", "GEMV q8_0 (ours)"], ["GEMV q5_0 x16 (ours)"]),
                                                ("q5_k_m", ["GEMV q5_1 (ours)", "GEMV q8_0 (ours)"], ["GEMV q5_1 x16 (ours)"]),
                                                ("q4_1", ["GEMV q4_1 (ours)"], ["GEMV q4_1 x16 (ours)"])])
def test_decoding_with_our_gemv_matches_ggmls_kernels(qtype, families, x16, tiny_checkpoint, convert_tiny, tmp_path):
    """24 tokens decoded one by one through our GEMV and through ggml's kernels (AUTOGLM_GEMM=ggml),
    the profiles showing which ran. ggml's row dot products sum the block products in another order
    (8 partial sums per row), so the logits are compared for accuracy against the F32 file, as the
    prompt GEMMs' are (_gemm_util.check_against_ggml), and the two runtimes' difference must be a
    small part of the quantization error, where a misread block would be comparable to it. Our AVX2
    variant decodes to the same bits as the machine's best.

    A default load holds the Q5_0/Q5_1/Q4_1 matrices in our interleaved layout (`x16` families, kernel
    gemv_block32_x16.h); repack=False keeps the GGUF layout (`families`, gemv_block32.h). Both give the
    same bits where the file has no type that ggml repacks (Q4_0, Q4_K)."""
    f32, _ = convert_tiny(tiny_checkpoint, "f32", "f16")
    q = tmp_path / f"{qtype}.gguf"
    quantize_gguf(f32, q, qtype, progress=False)
    prof_ours: list[str] = []
    prof_gguf: list[str] = []
    prof_ggml: list[str] = []
    ours = prompt_logits(q, None, n_batch=1, n_tokens=24, profile=prof_ours)
    gguf = prompt_logits(q, None, n_batch=1, n_tokens=24, profile=prof_gguf, repack=False)
    ggml = prompt_logits(q, "ggml", n_batch=1, n_tokens=24, profile=prof_ggml)
    for family in families:
        assert family in prof_gguf[0] and family not in prof_ggml[0], family
    for family in x16:
        assert family in prof_ours[0] and family not in prof_gguf[0] + prof_ggml[0], family
        assert family.replace(" x16", "") not in prof_ours[0], family
    if qtype != "q4_k_m":
        assert np.array_equal(ours, gguf), np.abs(ours - gguf).max()
    ref = prompt_logits(f32, None, n_batch=1, n_tokens=24)
    for run in (ours, gguf):
        err_run, err_ggml = np.abs(run - ref).max(), np.abs(ggml - ref).max()
        assert err_run <= 1.1 * err_ggml + 1e-3 * np.abs(ref).max()
        assert np.abs(run - ggml).max() <= 0.25 * err_ggml
    if _core._gemm_isas() != ["avx2"]:
        avx2 = prompt_logits(q, None, isa="avx2", n_batch=1, n_tokens=24)
        assert np.array_equal(avx2, ours), np.abs(avx2 - ours).max()
