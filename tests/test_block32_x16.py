"""Our interleaved layout for Q5_0/Q5_1/Q4_1 matrices (native/src/block32_x16.h) and its kernels: the
decode GEMV (gemv_block32_x16.h) and the prompt GEMM reading it (gemm_block32.h's panel unpacker), each
ISA variant against exact integer arithmetic and bit for bit against the same kernels on the GGUF
layout; the loader's choice (which matrices take it, repack=False, AUTOGLM_GEMM=ggml), the decoder at
micro-batch sizes ggml's kernels used to take, and the importance-matrix guard."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from _gemm_util import ISAS, block32_reference, need_isa, prompt_logits
from autoglm_gguf import _core
from autoglm_gguf.quantize import quantize_gguf

pytestmark = pytest.mark.skipif(not _core._gemm_available(), reason="the kernels need AVX2, FMA and F16C")

TYPES = ["q5_0", "q5_1", "q4_1"]
# N x K: one group of 16 rows and one block; groups that do not split evenly between threads; the
# 9B shape's FFN width (13,696 = 428 blocks)
SHAPES = [(16, 32), (48, 96), (80, 256), (32, 13696)]


def _weights(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[-1, :32] = np.linspace(-1, 1, 32)  # the extremes of the integer range
    w[0, -32:] += 3.0  # a block far from zero: the affine types' large m
    w[5 % n, :] *= 1e-3  # one row of small scales
    x = (rng.standard_normal(k) * 5).astype(np.float32)
    x[:32] = 0.0  # an all-zero activation block: scale 0
    x[-32:] = 127.0 * np.sign(rng.standard_normal(32))
    return w, x


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", TYPES)
def test_a_few_rows_each_get_the_one_row_gemvs_bits(isa, qtype):
    """Batches of up to 6 rows take the GEMV once per row (gemv_block32_x16.h x16_gemv_max_rows): each row
    of the result is what the row alone gets, a decode step's bits."""
    need_isa(isa)
    w, x = _weights(48, 256, 11)
    wx = _core._x16_repack(_core.quantize(w, qtype), qtype)
    xs = np.stack([x, -0.5 * x, np.roll(x, 32), np.zeros_like(x), x * 1e-3]).astype(np.float32)
    for threads in (1, 2, 3):
        got = _core._gemv(wx, xs, qtype, threads, isa, interleaved=True)
        assert got.shape == (5, 48)
        for j in range(5):
            assert np.array_equal(got[j], _core._gemv(wx, xs[j], qtype, threads, isa, interleaved=True)), (threads, j)
    assert not got[3].any()  # a zero row


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("n,k", SHAPES)
def test_gemv_matches_exact_arithmetic_and_the_gguf_layout_bit_for_bit(isa, qtype, n, k):
    need_isa(isa)
    w, x = _weights(n, k, n * 3 + k)
    wq = _core.quantize(w, qtype)
    wx = _core._x16_repack(wq, qtype)
    assert wx.shape == wq.shape and wx.dtype == np.uint8
    assert not np.array_equal(wx, wq)  # regrouped, not copied
    ref = block32_reference(wq, qtype, x[None])[0]
    for threads in (1, 2, 3):
        got = _core._gemv(wx, x, qtype, threads, isa, interleaved=True)
        assert got.shape == (n,) and got.dtype == np.float32
        assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), threads
        # the same integers and F32 steps as the GGUF-layout GEMV and the one-row GEMM
        assert np.array_equal(got, _core._gemv(wq, x, qtype, threads, isa)), threads
        assert np.array_equal(got, _core._gemm(wx, x[None], qtype, threads, isa, interleaved=True)[0]), threads


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("m", [1, 2, 13, 37])
def test_gemm_reads_the_layout_as_the_gguf_one(isa, qtype, m):
    need_isa(isa)
    n, k = 48, 288
    w, _ = _weights(n, k, m)
    a = (np.random.default_rng(m).standard_normal((m, k)) * 3).astype(np.float32)
    wq = _core.quantize(w, qtype)
    wx = _core._x16_repack(wq, qtype)
    got = _core._gemm(wx, a, qtype, 2, isa, interleaved=True)
    assert np.array_equal(got, _core._gemm(wq, a, qtype, 2, isa))
    ref = block32_reference(wq, qtype, a)
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def test_a_misplaced_nibble_is_caught():
    """The bit-equality above is not vacuous: one chunk of one row moved in the layout changes that row."""
    w, x = _weights(32, 64, 1)
    wq = _core.quantize(w, "q5_1")
    wx = _core._x16_repack(wq, "q5_1").copy()
    flat = wx.reshape(-1)
    # the second record (block 1 of rows 0-15; block 0 meets all-zero activations): d[16] m[16] masks[64],
    # then qs chunks of 64 bytes, row r at 4r: swap rows 3 and 4's first chunk
    at = 384 + 128
    r3, r4 = flat[at + 12: at + 16].copy(), flat[at + 16: at + 20].copy()
    flat[at + 12: at + 16], flat[at + 16: at + 20] = r4, r3
    assert not np.array_equal(r3, r4)
    got = _core._gemv(wx, x, "q5_1", 1, "", interleaved=True)
    want = _core._gemv(wq, x, "q5_1", 1, "")
    changed = np.flatnonzero(got != want)
    assert set(changed.tolist()) <= {3, 4} and len(changed) > 0


def test_bad_inputs_are_refused():
    wq = _core.quantize(np.ones((24, 64), np.float32), "q5_1")
    with pytest.raises(ValueError, match="multiple of 16"):
        _core._x16_repack(wq, "q5_1")
    w8 = _core.quantize(np.ones((16, 64), np.float32), "q8_0")
    with pytest.raises(ValueError, match="no interleaved layout for q8_0"):
        _core._x16_repack(w8, "q8_0")
    with pytest.raises(ValueError, match="no interleaved layout for q8_0"):
        _core._gemv(w8, np.ones(64, np.float32), "q8_0", interleaved=True)
    with pytest.raises(ValueError, match="no interleaved layout for q8_0"):
        _core._gemm(w8, np.ones((2, 64), np.float32), "q8_0", interleaved=True)
    with pytest.raises(ValueError, match="multiple of 16"):
        _core._gemv(wq, np.ones(64, np.float32), "q5_1", interleaved=True)


@pytest.fixture(scope="module")
def q5_k_m_file(tiny_checkpoint, convert_tiny, tmp_path_factory) -> tuple:
    f32, _ = convert_tiny(tiny_checkpoint, "f32", "f16")
    q = tmp_path_factory.mktemp("x16") / "q5_k_m.gguf"
    quantize_gguf(f32, q, "q5_k_m", progress=False)
    return f32, q


def _count_in_child(path, env_gemm: str | None, repack: bool) -> int:
    env = {k: v for k, v in os.environ.items() if k != "AUTOGLM_GEMM"}
    if env_gemm:
        env["AUTOGLM_GEMM"] = env_gemm
    code = ("import sys\nfrom autoglm_gguf import _core\n"
            "print(_core.TextModel(sys.argv[1], n_threads=1, repack=sys.argv[2] == '1').interleaved_weights)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(int(repack))], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return int(proc.stdout.strip())


def test_the_loader_interleaves_the_q5_1_matrices_only_where_our_kernels_run(q5_k_m_file):
    from gguf import GGMLQuantizationType, GGUFReader

    _, q = q5_k_m_file
    r = GGUFReader(q)
    want = sum(1 for t in r.tensors if t.tensor_type in (GGMLQuantizationType.Q5_0, GGMLQuantizationType.Q5_1,
                                                         GGMLQuantizationType.Q4_1)
               and t.name != "token_embd.weight" and int(t.shape[1]) % 16 == 0)
    assert want > 0
    assert _count_in_child(q, None, True) == want
    assert _count_in_child(q, None, False) == 0
    assert _count_in_child(q, "ggml", True) == 0  # ggml's kernels everywhere: nothing they cannot read


@pytest.mark.parametrize("n_batch", [2, 5, 6, 7, 31])
def test_micro_batches_below_32_rows_run_our_kernels_on_the_layout(q5_k_m_file, n_batch):
    """ggml cannot read the layout, so micro-batches of 2-31 rows take our kernels too: up to 6 rows the
    GEMV once per row, from 7 the GEMM. As accurate as ggml's kernels on the GGUF layout against the F32
    file."""
    f32, q = q5_k_m_file
    prof: list[str] = []
    ours = prompt_logits(q, None, n_batch=n_batch, n_tokens=40, profile=prof)
    gemv, gemm = "GEMV q5_1 x16 (ours)" in prof[0], "GEMM q5_1 (ours)" in prof[0]
    # 40 tokens: from 7 rows the micro-batches take the GEMM (a last one of up to 6 the GEMV)
    assert (gemv, gemm) == (True, False) if n_batch <= 6 else gemm, prof[0]
    ggml = prompt_logits(q, "ggml", n_batch=n_batch, n_tokens=40)
    ref = prompt_logits(f32, None, n_batch=n_batch, n_tokens=40)
    err_ours, err_ggml = np.abs(ours - ref).max(), np.abs(ggml - ref).max()
    assert err_ours <= 1.1 * err_ggml + 1e-3 * np.abs(ref).max()
    assert np.abs(ours - ggml).max() <= 0.25 * err_ggml


def test_an_importance_matrix_needs_a_load_without_the_layout(q5_k_m_file):
    _, q = q5_k_m_file
    m = _core.TextModel(str(q), n_threads=1)
    assert m.interleaved_weights > 0
    s = _core.Session(m, n_ctx=64)
    with pytest.raises(ValueError, match="repack=False"):
        s.imatrix_start()
    plain = _core.TextModel(str(q), n_threads=1, repack=False)
    s2 = _core.Session(plain, n_ctx=64)
    s2.imatrix_start()
    assert s2.imatrix_active
