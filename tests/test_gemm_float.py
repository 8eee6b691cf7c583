"""Our GEMM for float weights (native/src/gemm_float.h): the vision tower's and merger's matmuls.

Each output is one F32 FMA chain over k in order, whatever the blocking, the threads or the
instruction set, so: exact on integer data (every product and partial sum representable), the same
bits on every ISA, within F32 rounding of a float64 product otherwise; and in the tower, the image
embeddings stay within the F32/F16 bounds against ggml's matmul (AUTOGLM_GEMM=ggml).
The exception: BF16 weights on the avx512_bf16 variant (vdpbf16ps) round the activations to BF16 too,
so there the product is that of the rounded activations, within F32 rounding."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from _gemm_util import ISAS, need_isa
from autoglm_gguf import _core

pytestmark = pytest.mark.skipif(not _core._gemm_available(), reason="our GEMMs need AVX2, FMA and F16C")

TYPES = {"f32": np.float32, "f16": np.float16}
# rows across the tile heights (12 on AVX-512, 6 on AVX2) and the 96-row A block; columns across the
# panel widths (32, 16); K across the 512-long k block
SHAPES = [(1, 1, 1), (5, 7, 3), (13, 33, 17), (97, 45, 513), (200, 70, 1100), (37, 129, 64)]


def _bf16_bytes(x: np.ndarray) -> np.ndarray:
    """x (float32, exactly representable in bf16) as bf16 bytes: the upper halves."""
    return (np.ascontiguousarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)


def _round_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest bf16 (ties to even), as float32 (finite inputs)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def _weights(w: np.ndarray, wtype: str) -> np.ndarray:
    if wtype == "bf16":
        return _bf16_bytes(w)
    return np.ascontiguousarray(w.astype(TYPES[wtype])).view(np.uint8)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("wtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_integer_data_is_exact(isa, wtype, m, n, k):
    need_isa(isa)
    rng = np.random.default_rng(m * 1000 + n + k)
    a = rng.integers(-8, 9, (m, k)).astype(np.float32)
    w = rng.integers(-8, 9, (n, k)).astype(np.float32)  # exact in f16 and bf16 too
    want = a.astype(np.int64) @ w.astype(np.int64).T  # |sum| < 2^24: exact in F32 at every step
    for threads in (1, 2, 3):
        got = _core._gemm(_weights(w, wtype), a, wtype, threads, isa)
        assert got.shape == (m, n) and got.dtype == np.float32
        assert np.array_equal(got, want.astype(np.float32)), (threads, np.abs(got - want).max())


@pytest.mark.parametrize("wtype", ["f32", "f16", "bf16"])
def test_every_isa_gives_the_same_bits(wtype):
    """Random data, K across several k blocks and odd edges: the same F32 chain on AVX2 and AVX-512."""
    rng = np.random.default_rng(7)
    m, n, k = 131, 75, 1300
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    if wtype == "bf16":
        w = (w.view(np.uint32) & 0xFFFF0000).view(np.float32)
    isas = [i for i in _core._gemm_isas() if not (wtype == "bf16" and i in ("avx512_bf16", "amx"))]  # (next test)
    outs = {isa: _core._gemm(_weights(w, wtype), a, wtype, 2, isa) for isa in isas}
    first = next(iter(outs.values()))
    for isa, got in outs.items():
        assert np.array_equal(got, first), isa
    # and it is the product: within F32 rounding of float64 (sum of |terms| bounds the error)
    w_used = w.astype(TYPES[wtype]).astype(np.float64) if wtype != "bf16" else w.astype(np.float64)
    ref = a.astype(np.float64) @ w_used.T
    scale = np.abs(a).astype(np.float64) @ np.abs(w_used).T
    assert np.all(np.abs(first - ref) <= k * 2.0**-24 * scale + 1e-30)
    assert np.abs(first - ref).max() / np.abs(ref).max() < 1e-5


@pytest.mark.parametrize("isa", ["avx512_bf16", "amx"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("m,n,k", [(131, 75, 1301), (64, 64, 1024), (33, 1100, 96)])
def test_bf16_dot_products_round_the_activations(isa, threads, m, n, k):
    """avx512_bf16 (vdpbf16ps) and amx (tdpbf16ps) with BF16 weights: the activations rounded to
    nearest-even BF16, the products summed in F32. Within F32 rounding of the float64 product of the
    rounded activations (K across several k blocks, odd; rows and columns off the tiles, whole tiles,
    and more columns than one packed block), and measurably not the F32-activation product."""
    need_isa(isa)
    rng = np.random.default_rng(11)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = _round_to_bf16((rng.standard_normal((n, k)) * 0.05).astype(np.float32))
    got = _core._gemm(_weights(w, "bf16"), a, "bf16", threads, isa)
    a16 = _round_to_bf16(a).astype(np.float64)
    ref = a16 @ w.astype(np.float64).T
    scale = np.abs(a16) @ np.abs(w.astype(np.float64)).T
    assert np.all(np.abs(got - ref) <= k * 2.0**-24 * scale + 1e-30), np.abs(got - ref).max()
    fma = _core._gemm(_weights(w, "bf16"), a, "bf16", threads, "avx512_vnni")
    exact = a.astype(np.float64) @ w.astype(np.float64).T
    assert np.abs(fma - exact).max() < np.abs(got - exact).max() <= 2.0**-8 * scale.max()


def test_bad_arguments_are_clear_errors():
    a = np.ones((4, 8), np.float32)
    with pytest.raises(ValueError, match="N rows"):
        _core._gemm(np.ones((3, 15), np.uint8), a, "f16", 1, "")  # 15 bytes is not 8 halves
    with pytest.raises(ValueError, match="cannot run"):
        _core._gemm(np.ones((3, 16), np.uint8), a, "f16", 1, "sse9")


_ENCODE = ("import sys, numpy as np\nfrom autoglm_gguf import _core\n"
           "v = _core.VisionModel(sys.argv[1], n_threads=2, use_gpu=False, matmul_type=sys.argv[3])\n"
           "p = np.random.default_rng(3).standard_normal((24 * 20, 3 * 14 * 14)).astype(np.float32)\n"
           "np.save(sys.argv[2], v.encode(p, 24, 20))\n")


def _embeddings(mmproj, tmp_path, env_gemm: str | None, profile: bool = False, matmul_type: str = "file"):
    out = tmp_path / f"emb.{mmproj.stem}.{env_gemm or 'ours'}.{matmul_type}.npy"
    env = {k: v for k, v in os.environ.items() if k not in ("AUTOGLM_GEMM", "AUTOGLM_PROFILE")}
    if env_gemm:
        env["AUTOGLM_GEMM"] = env_gemm
    if profile:
        env["AUTOGLM_PROFILE"] = "1"
    proc = subprocess.run([sys.executable, "-c", _ENCODE, str(mmproj), str(out), matmul_type], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return np.load(out), proc.stderr


def test_tower_with_our_gemm_against_ggml(tiny_checkpoint_f32, convert_tiny, tmp_path):
    """The whole tower (480 patches, 120 tokens: tiles and panels with edges) with our GEMM against ggml's
    matmul (AUTOGLM_GEMM=ggml), on an F32 and an F16 file.
    - F32: both are F32 sums in other orders (measured 1.4e-6 of the largest value).
    - F16: ggml rounds the activations to F16 and ours keeps them F32, so against the F32 file's
      embeddings ours must be at least as close as ggml's (measured: 1.0e-3 against 1.8e-3).
    The profile names the matrices as ours, against the f32 peak."""
    _, mm32 = convert_tiny(tiny_checkpoint_f32, "f32", "f32")
    _, mm16 = convert_tiny(tiny_checkpoint_f32, "f32", "f16")
    ref, err = _embeddings(mm32, tmp_path, None, profile=True)
    ref_ggml, _ = _embeddings(mm32, tmp_path, "ggml")
    scale = np.abs(ref_ggml).max()
    rel32 = np.abs(ref - ref_ggml).max() / scale
    ours16, err16 = _embeddings(mm16, tmp_path, None, profile=True)
    ggml16, _ = _embeddings(mm16, tmp_path, "ggml")
    e_ours, e_ggml = np.abs(ours16 - ref).max() / scale, np.abs(ggml16 - ref).max() / scale
    print(f"f32: |ours - ggml| {rel32:.2e}; f16 against the f32 file: ours {e_ours:.2e}, ggml {e_ggml:.2e}")
    assert rel32 <= 1e-5
    assert e_ours <= e_ggml
    for text, family in ((err, "GEMM f32 (ours)"), (err16, "GEMM f16 (ours)")):
        line = next((ln for ln in text.splitlines() if ln.strip().startswith(family)), None)
        assert line is not None and "of f32 peak" in line, text


def test_bf16_tower_with_our_dot_products_against_ggml(tiny_checkpoint_f32, convert_tiny, tmp_path):
    """The tower with its matrices held in BF16 (vision matmul type "bf16", what "auto" picks on such a
    CPU): our vdpbf16ps GEMM against ggml's BF16 matmul, which rounds the activations the same way and
    sums in another order. Against the F32 embeddings, ours within the 3% the BF16 tower is allowed and
    about as close as ggml's; the profile measures it against the bf16 peak."""
    need_isa("avx512_bf16")
    _, mm32 = convert_tiny(tiny_checkpoint_f32, "f32", "f32")
    ref, _ = _embeddings(mm32, tmp_path, None)
    ours, err = _embeddings(mm32, tmp_path, None, profile=True, matmul_type="bf16")
    ggml, _ = _embeddings(mm32, tmp_path, "ggml", matmul_type="bf16")
    scale = np.abs(ref).max()
    e_ours, e_ggml = np.abs(ours - ref).max() / scale, np.abs(ggml - ref).max() / scale
    print(f"bf16 against the f32 embeddings: ours {e_ours:.2e}, ggml {e_ggml:.2e}")
    assert e_ours <= 0.03 and e_ours <= 1.5 * e_ggml
    line = next((ln for ln in err.splitlines() if ln.strip().startswith("GEMM bf16 (ours)")), None)
    assert line is not None and ("of bf16 peak" in line or "of amx_bf16 peak" in line), err
