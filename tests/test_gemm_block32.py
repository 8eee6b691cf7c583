"""Our block-32 prompt GEMMs (native/src/gemm_block32.h: Q4_0, Q5_0, Q8_0, Q4_1 and Q5_1 weights) against exact
integer arithmetic: weights from ggml's own quantizer, activations quantized per 32-block to int8 as
ggml's Q8_0 (q = round-half-even(x * 127 / max|x|), d = max|x| / 127 kept in F16, as ggml's AVX2 code),
int32 dot products per block, scaled by both scales (plus the affine types' m times the activations'
block sums); and in decoder graphs against ggml's kernels."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from _gemm_util import (
    ISAS,
    block32_dequantized,
    block32_reference,
    check_against_ggml,
    check_bf16_tiles,
    check_bf16_tiles_in_model,
    check_isas_agree,
    ggml_avx2_kernels,
    need_isa,
)
from autoglm_gguf import _core
from autoglm_gguf.quantize import quantize_gguf

pytestmark = pytest.mark.skipif(not _core._gemm_available(), reason="the kernel needs AVX2, FMA and F16C")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", ["q4_0", "q5_0", "q8_0", "q4_1", "q5_1"])
@pytest.mark.parametrize("m,n,k", [(1, 8, 32), (3, 13, 96), (5, 72, 256), (64, 40, 512), (130, 24, 160)])
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_exact_integer_arithmetic(isa, qtype, m, n, k, threads):
    need_isa(isa)
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[-1, :32] = np.linspace(-1, 1, 32)  # the extremes of the integer range: -127/127 (Q8_0), -16/15 (Q5_0)
    w[0, 32:64] += 3.0  # a block far from zero: the affine types' large m
    a = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10, (m, 1))).astype(np.float32)
    a[0, :32] = 0.0  # an all-zero block: scale 0
    wq = _core.quantize(w, qtype)
    got = _core._gemm(wq, a, qtype, threads, isa, tiles="int8")  # (amx: tiles="bf16" is the next test's)
    ref = block32_reference(wq, qtype, a)
    assert got.shape == (m, n)
    # F32 accumulation over K/32 blocks vs the exact sum
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    # and it is a matrix product: close to the float product of the dequantized weights
    deq = block32_dequantized(wq, qtype, k)
    assert np.abs(got - a @ deq.T).max() <= 0.02 * np.abs(a @ deq.T).max()


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "avx2"])
@pytest.mark.parametrize("qtype", ["q4_0", "q5_0", "q8_0", "q4_1", "q5_1"])
def test_every_isa_variant_equals_the_avx2_kernel_bit_for_bit(isa, qtype):
    """The wider variants compute the same integer block sums and the same F32 operations in the same
    order, so a model's logits do not depend on the machine's instruction set. The shapes cross every
    edge: column counts that leave a part of a 16-column group (or a thread's share) empty, row counts
    that leave a part of a row tile, 1 to 3 threads, K from one block to many."""
    need_isa(isa)
    rng = np.random.default_rng(7)
    for m, n, k in [(1, 8, 32), (7, 13, 96), (9, 24, 160), (33, 40, 512), (130, 17, 256), (8, 72, 4096), (40, 56, 64),
                    (96, 100, 320)]:
        w = rng.standard_normal((n, k)).astype(np.float32)
        a = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10, (m, 1))).astype(np.float32)
        a[0, :32] = 0.0
        wq = _core.quantize(w, qtype)
        for threads in (1, 2, 3):
            want = _core._gemm(wq, a, qtype, threads, "avx2")
            got = _core._gemm(wq, a, qtype, threads, isa, tiles="int8")
            assert np.array_equal(got, want), (m, n, k, threads, np.abs(got - want).max())


@pytest.mark.parametrize("qtype", ["q4_0", "q5_0", "q8_0", "q4_1", "q5_1"])
def test_bf16_tiles_round_only_the_operands(qtype):
    """The BF16 tile path (_gemm_util.check_bf16_tiles) with each block-32 type's weights (dw x (u - offset),
    or dw x u + m, exact in F32). The shapes cross every edge: groups of 32 and of 512 columns and blocks
    of 512 k left part-full, row tiles part-full, 1-3 threads."""
    need_isa("amx")
    rng = np.random.default_rng(11)
    for m, n, k in [(1, 8, 32), (7, 13, 96), (33, 40, 544), (130, 17, 256), (96, 100, 1056), (40, 600, 64),
                    (64, 72, 4096)]:
        w = rng.standard_normal((n, k)).astype(np.float32)
        w[0, 32:64] += 3.0  # a block far from zero: the affine types' large m
        a = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10, (m, 1))).astype(np.float32)
        a[0, :32] = 0.0
        wq = _core.quantize(w, qtype)
        for threads in (1, 2, 3):
            check_bf16_tiles(wq, qtype, a, block32_dequantized(wq, qtype, k), threads)


def test_bf16_tiles_are_refused_where_there_are_none():
    wq = _core.quantize(np.ones((8, 64), np.float32), "q4_0")
    a = np.ones((2, 64), np.float32)
    non_amx = [i for i in _core._gemm_isas() if i != "amx"]
    with pytest.raises(ValueError, match="no BF16 tile kernel for q4_0 weights on avx2"):
        _core._gemm(wq, a, "q4_0", 1, non_amx[0], tiles="bf16")
    with pytest.raises(ValueError, match="tiles must be int8, bf16 or empty"):
        _core._gemm(wq, a, "q4_0", 1, "", tiles="fp8")
    if "amx" in _core._gemm_isas():
        wk = _core.quantize(np.ones((8, 32), np.float32), "iq4_nl")
        with pytest.raises(ValueError, match="no kernel for iq4_nl"):
            _core._gemm(wk, np.ones((2, 32), np.float32), "iq4_nl", 1, "amx", tiles="bf16")


def test_an_isa_this_machine_lacks_is_refused():
    wq = _core.quantize(np.ones((8, 64), np.float32), "q4_0")
    with pytest.raises(ValueError, match="cannot run the 'avx9000' kernels"):
        _core._gemm(wq, np.ones((2, 64), np.float32), "q4_0", 1, "avx9000")
    # the graph's choice is the best this machine has, unless AUTOGLM_GEMM_ISA=avx2 asked for AVX2
    assert _core._gemm_isa() in _core._gemm_isas()


@pytest.mark.parametrize("var,value,message", [
    ("AUTOGLM_GEMM_ISA", "avx9000", "is unknown: expected avx2, avx_vnni, avx512_vnni, avx512_bf16 or amx"),
    ("AUTOGLM_GEMM_ISA", "AVX2", "is unknown: expected avx2, avx_vnni, avx512_vnni, avx512_bf16 or amx"),
    ("AUTOGLM_AMX_TILES", "fp8", "is unknown: expected int8, bf16 or auto (or unset)")])
def test_a_bad_kernel_setting_is_a_clear_error(var, value, message, tiny_checkpoint, convert_tiny):
    """The settings are read once per process, so each case runs in a child: a session that could use our
    GEMMs refuses to start with the message (as ValueError; its graphs are planned when it is made), and
    the process does not crash. AUTOGLM_AMX_TILES is checked on every machine, AMX or not."""
    text, _ = convert_tiny(tiny_checkpoint, "q4_0", "f16")
    child = ("import sys\nfrom autoglm_gguf import _core\nm = _core.TextModel(sys.argv[1], n_threads=1)\n"
             "try:\n    _core.Session(m, n_ctx=256, kv_type='f32').eval_tokens(list(range(5, 85)), 'last')\n"
             "except ValueError as e:\n    print('ValueError:', e)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("AUTOGLM_GEMM", "AUTOGLM_GEMM_ISA", "AUTOGLM_AMX_TILES")}
    env[var] = value
    proc = subprocess.run([sys.executable, "-c", child, str(text)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "ValueError:" in proc.stdout and message in proc.stdout and f"{var}={value}" in proc.stdout


def test_bad_shapes_are_refused():
    wq = _core.quantize(np.ones((8, 64), np.float32), "q4_0")
    with pytest.raises(ValueError, match="multiple of 32|q4_0 blocks"):
        _core._gemm(wq, np.ones((2, 48), np.float32), "q4_0")
    with pytest.raises(ValueError, match="q4_0 blocks"):
        _core._gemm(wq, np.ones((2, 96), np.float32), "q4_0")
    with pytest.raises(ValueError, match="no kernel for iq4_nl"):
        _core._gemm(_core.quantize(np.ones((8, 64), np.float32), "iq4_nl"), np.ones((2, 64), np.float32), "iq4_nl")


@pytest.mark.parametrize("qtype", ["q4_0", "q5_0", "q8_0", "q5_1", "q4_1"])
@pytest.mark.parametrize("arch", ["tiny", "alt"])
def test_prompt_processing_with_our_gemm_matches_ggml(qtype, arch, tiny_checkpoint, alt_checkpoint, convert_tiny,
                                                      tmp_path):
    """A 77-token prompt (micro-batches of 64 and 13 rows) through our GEMM and through ggml's kernels
    (AUTOGLM_GEMM=ggml): Q4_0's F32 steps are those of ggml's repacked AVX2 kernel, so its logits are
    equal there; Q5_0 and Q8_0 go through llamafile's tinyBLAS in ggml, which keeps 8 partial sums per
    output, and Q5_1 and Q4_1 through its row dot products against Q8_1 activations (the sums kept in
    F16), so those are checked for accuracy against the F32 file (_gemm_util.check_against_ggml)."""
    f32, _ = convert_tiny(tiny_checkpoint if arch == "tiny" else alt_checkpoint, "f32", "f16")
    q = tmp_path / f"{qtype}.gguf"
    # the Q4_0 file's output head in Q4_0 too (the preset's is Q6_K, or Q8_0 at these widths), so that
    # every matrix has ggml's F32 order; but the alt model's vocabulary (509) is no multiple of 8, so
    # ggml does not repack its head, which then takes ggml's row dot products, in another order
    quantize_gguf(f32, q, qtype, progress=False, output_tensor_type="q4_0" if qtype == "q4_0" else None)
    check_against_ggml(q, f32, mirrors_ggml_order=qtype == "q4_0" and arch == "tiny" and ggml_avx2_kernels())


@pytest.mark.parametrize("qtype", ["q4_0", "q5_0", "q8_0", "q5_1"])
def test_a_models_logits_do_not_depend_on_the_instruction_set(qtype, tiny_checkpoint, convert_tiny, tmp_path):
    f32, _ = convert_tiny(tiny_checkpoint, "f32", "f16")
    q = tmp_path / f"{qtype}.gguf"
    quantize_gguf(f32, q, qtype, progress=False)
    check_isas_agree(q)


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


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0", "q5_1"])
def test_bf16_tiles_in_a_model_are_as_accurate_as_the_int8_ones(qtype, tiny_checkpoint, convert_tiny, tmp_path):
    need_isa("amx")
    f32, _ = convert_tiny(tiny_checkpoint, "f32", "f16")
    q = tmp_path / f"{qtype}.gguf"
    quantize_gguf(f32, q, qtype, progress=False)
    check_bf16_tiles_in_model(q, f32, [qtype])


def test_the_tiles_a_product_runs_on_are_named():
    """_gemm_tiles names what the graph picks (the benchmark's peak follows it): on AMX the int8 tiles
    below the BF16 ones' row threshold for the block-32 types, the VNNI kernels (no tiles) for the
    K-quants there, the BF16 tiles above; elsewhere none."""
    amx = "amx" in _core._gemm_isas() and _core._gemm_isa() == "amx"
    assert _core._gemm_tiles("q4_0", 32) == ("int8" if amx else "")
    assert _core._gemm_tiles("q4_0", 96) == ("bf16" if amx else "")
    assert _core._gemm_tiles("q4_k", 32) == ""
    assert _core._gemm_tiles("q6_k", 64) == ("bf16" if amx else "")
    assert _core._gemm_tiles("f16", 512) == ""
