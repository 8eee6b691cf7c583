"""Our decode GEMV for Q4_0 weights in ggml's repacked layout (native/src/gemv_q4_0.h), each ISA variant:
against exact integer arithmetic, bit for bit against our prompt GEMM, and in a decoder decoding token
by token against ggml's matrix-vector kernel on the same repacked weights."""

from __future__ import annotations

import numpy as np
import pytest

from _gemm_util import ISAS, block32_reference, ggml_avx2_kernels, need_isa, prompt_logits
from autoglm_gguf import _core
from autoglm_gguf.quantize import quantize_gguf

pytestmark = pytest.mark.skipif(not _core._gemm_available(), reason="the kernel needs AVX2, FMA and F16C")

# N x K: one panel; odd block counts (the last block alone); panels that do not split evenly between
# threads; the 9B shape's widths (13,696 = 428 blocks, the FFN)
SHAPES = [(8, 32), (16, 64), (24, 96), (40, 160), (72, 256), (8, 4096), (1032, 4096), (256, 13696)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n,k", SHAPES)
def test_matches_exact_integer_arithmetic_and_the_prompt_gemm(isa, n, k):
    need_isa(isa)
    rng = np.random.default_rng(n + k)
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[-1, :32] = np.linspace(-1, 1, 32)  # the extremes of the nibble range, -8 and 7
    x = (rng.standard_normal(k) * 5).astype(np.float32)
    x[:32] = 0.0  # an all-zero activation block: scale 0
    x[-32:] = 127.0 * np.sign(rng.standard_normal(32))  # the extremes of int8
    wq = _core.quantize(w, "q4_0")
    ref = block32_reference(wq, "q4_0", x[None])[0]
    for threads in (1, 2, 3):
        got = _core._gemv_q4_0(wq, x, threads, isa)
        assert got.shape == (n,) and got.dtype == np.float32
        # F32 accumulation over K/32 blocks vs the exact sum
        assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), threads
        # each column is the prompt GEMM's F32 chain: a token gets the same bits decoded or in a batch,
        # on every ISA (the GEMM's variants agree bit for bit: test_gemm_block32.py)
        row = _core._gemm(wq, x[None], "q4_0", threads, "avx2")[0]
        assert np.array_equal(got, row), (threads, np.abs(got - row).max())


def test_bad_shapes_are_refused():
    wq = _core.quantize(np.ones((8, 64), np.float32), "q4_0")
    with pytest.raises(ValueError, match="q4_0 blocks"):
        _core._gemv_q4_0(wq, np.ones(96, np.float32))
    with pytest.raises(ValueError, match="multiple of 8"):
        _core._gemv_q4_0(_core.quantize(np.ones((12, 64), np.float32), "q4_0"), np.ones(64, np.float32))
    with pytest.raises(ValueError, match="cannot run the 'avx9000' kernels"):
        _core._gemv_q4_0(wq, np.ones(64, np.float32), 1, "avx9000")


@pytest.mark.parametrize("arch", ["tiny", "alt"])
def test_decoding_with_our_gemv_matches_ggmls_kernel(arch, tiny_checkpoint, alt_checkpoint, convert_tiny, tmp_path):
    """24 tokens decoded one by one (every matmul a matrix-vector product) through our GEMV and through
    ggml's repacked kernel (AUTOGLM_GEMM=ggml). The profiles show which ran, so a layout misread (the
    repacked one is ggml's) cannot hide behind a fallback. ggml's AVX2 kernel takes the same F32 steps
    (fma(block sum, dw * da, acc) per block), so there the logits are equal; otherwise they are as
    accurate as ggml's against the F32 file."""
    f32, _ = convert_tiny(tiny_checkpoint if arch == "tiny" else alt_checkpoint, "f32", "f16")
    q = tmp_path / "q4_0.gguf"
    quantize_gguf(f32, q, "q4_0", progress=False, output_tensor_type="q4_0")  # the head too: all Q4_0
    prof_ours: list[str] = []
    prof_ggml: list[str] = []
    ours = prompt_logits(q, None, n_batch=1, n_tokens=24, profile=prof_ours)
    ggml = prompt_logits(q, "ggml", n_batch=1, n_tokens=24, profile=prof_ggml)
    assert "GEMV q4_0 (ours)" in prof_ours[0] and "GEMV q4_0" not in prof_ggml[0]
    assert "MUL_MAT q4_0 CPU_REPACK (vector)" in prof_ggml[0]
    # (the alt model's vocabulary, 509, is no multiple of 8: ggml does not repack its head, whose row
    # dot products then sum in another order than our GGUF-layout GEMV)
    if ggml_avx2_kernels() and arch == "tiny":
        assert np.array_equal(ours, ggml), np.abs(ours - ggml).max()
    ref = prompt_logits(f32, None, n_batch=1, n_tokens=24)
    err_ours, err_ggml = np.abs(ours - ref).max(), np.abs(ggml - ref).max()
    assert err_ours <= 1.1 * err_ggml + 1e-3 * np.abs(ref).max()
    # the AVX2 variant (AUTOGLM_GEMM_ISA=avx2) decodes to the same bits as the machine's best
    if _core._gemm_isas() != ["avx2"]:
        prof_avx2: list[str] = []
        avx2 = prompt_logits(q, None, isa="avx2", n_batch=1, n_tokens=24, profile=prof_avx2)
        assert "GEMV q4_0 (ours)" in prof_avx2[0]
        assert np.array_equal(avx2, ours), np.abs(avx2 - ours).max()
