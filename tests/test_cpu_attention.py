"""Our CPU attention kernels (native/src/cpu_attention.h) on arrays, against float64: the F32 kernels
(AVX2, AVX-512) and the BF16 one (AMX-BF16 tiles, else vdpbf16ps) with the decoder's causal mask over a
cache (a past, a masked padding tail, grouped-query heads), at head widths and lengths no model fixture
has; and which kernel a prompt gets by default."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from _gemm_util import bf16_rounded, need_isa
from autoglm_gguf import _core

EPS_BF16 = 2.0 ** -8  # BF16's unit roundoff (8 significant bits, nearest even); its spacing is 2 eps

# (head_dim, n_head, n_head_kv, tokens, past, padding): the 9B decoder's heads (128 wide, 16 query
# heads per K/V head), narrower and odd-sized ones (pairs past the last whole tile step), several
# blocks of 256 keys, query blocks of 48 rows with remainders, a masked tail of unused cache cells.
SHAPES = [
    (128, 32, 2, 100, 300, 112),
    (128, 4, 4, 1, 0, 0),
    (64, 6, 2, 48, 37, 11),
    (80, 4, 1, 130, 0, 126),
    (40, 2, 2, 17, 260, 3),
    (72, 3, 3, 64, 512, 0),
]


def _case(hd, n_head, n_head_kv, n, past, pad, seed=0):
    rng = np.random.default_rng(seed)
    n_kv = past + n + pad
    q = rng.standard_normal((n, n_head, hd)).astype(np.float32)
    k = rng.standard_normal((n_kv, n_head_kv, hd)).astype(np.float32)
    v = rng.standard_normal((n_kv, n_head_kv, hd)).astype(np.float32)
    mask = np.zeros((n, n_kv), np.float16)
    for i in range(n):
        mask[i, past + i + 1:] = -np.inf  # causal over the cache: the past and itself
    return q, k, v, mask


def _reference(q, k, v, mask, rounded=False):
    """float64 attention and, per output, the sum over keys of weight x |v| (the scale of its error);
    `rounded`: of the operands the BF16 kernel multiplies (q / sqrt(hd) in F32, k and v, all rounded to
    BF16)."""
    n, n_head, hd = q.shape
    group = n_head // k.shape[1]
    out = np.empty(q.shape)
    scale = np.empty(q.shape)
    big_s = np.empty(q.shape[:2])
    if rounded:
        q = bf16_rounded(q * (np.float32(1) / np.sqrt(np.float32(hd)))) * np.sqrt(hd)
        k, v = bf16_rounded(k), bf16_rounded(v)
    for h in range(n_head):
        kh, vh = k[:, h // group].astype(np.float64), v[:, h // group].astype(np.float64)
        qh = q[:, h].astype(np.float64)
        s = qh @ kh.T / np.sqrt(hd) + mask.astype(np.float64)
        w = np.exp(s - s.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        out[:, h] = w @ vh
        scale[:, h] = w @ np.abs(vh)
        # the largest error a score can get from rounding q and k to BF16: 2 eps sum_d |q_d k_d| / sqrt(hd)
        big_s[:, h] = np.where(mask == 0, np.abs(qh) @ np.abs(kh).T, 0).max(axis=1) / np.sqrt(hd)
    return out, scale, big_s


def _f32_kernels():
    return [k for k in ("avx2", "avx512") if k in _available()]


def _available():
    out = []
    for k in ("avx2", "avx512", "avx512_bf16"):
        try:
            _core._attention(*_case(8, 1, 1, 1, 0, 0)[:3], None, k)
            out.append(k)
        except ValueError as e:
            assert "not available on this CPU" in str(e)
    return out


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_f32_kernels_match_float64(shape):
    q, k, v, mask = _case(*shape)
    ref, scale, _ = _reference(q, k, v, mask)
    kernels = _f32_kernels()
    if not kernels:
        pytest.skip("no AVX2 on this CPU: the graphs use ggml's flash attention")
    for kern in kernels:
        out = _core._attention(q, k, v, mask.view(np.uint16), kern, 2)
        assert np.all(np.abs(out - ref) <= 1e-5 * scale + 1e-6), kern


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bf16_kernel_within_its_rounding_bound(shape):
    """q, k, v and the softmax's weights rounded to BF16, sums in F32. Each score is then off by at most
    2 eps sum_d |q_d k_d| / sqrt(hd) (eps = 2^-8), so each weight by a factor within exp(+-2 that) of
    its own, then rounded (eps) after a 1e-4 exp, and v by eps: every output is within
    (exp(4 ds) - 1 + 3 eps + 1e-4) sum_j w_j |v_j| of the exact one, ds its row's largest score error.
    A misplaced key, a masked key let through or a wrong scale is far outside that."""
    if "avx512_bf16" not in _available():
        pytest.skip("this CPU lacks AVX512_BF16")
    q, k, v, mask = _case(*shape)
    ref, scale, big_s = _reference(q, k, v, mask)
    out = _core._attention(q, k, v, mask.view(np.uint16), "avx512_bf16", 2)
    ds = 2 * EPS_BF16 * big_s[:, :, None]
    bound = (np.expm1(4 * ds) + 3 * EPS_BF16 + 1e-4) * scale
    err = np.abs(out - ref)
    print(f"\n[{'x'.join(map(str, shape))}] bf16 attention ({_core._gemm_isa()}): max err / bound "
          f"{(err / bound).max():.3f}, max err {err.max():.2e}")
    assert np.all(err <= bound)
    assert err.max() > 1e-4 * scale.max()  # rounded: not the F32 kernel
    # Against the product of the rounded operands, what is left is the weights' own rounding (eps),
    # the exp (7.5e-5, in each weight and in the sum that divides them) and F32 sums: a truncation
    # instead of rounding, or a q scaled after rounding instead of before, is outside it.
    ref_r, scale_r, _ = _reference(q, k, v, mask, rounded=True)
    err_r = np.abs(out - ref_r)
    print(f"  against the rounded operands: max err / bound {(err_r / ((EPS_BF16 + 4e-4) * scale_r + 1e-6)).max():.3f}")
    assert np.all(err_r <= (EPS_BF16 + 4e-4) * scale_r + 1e-6)


@pytest.mark.parametrize("kern", ["avx2", "avx512", "avx512_bf16"])
def test_masked_cells_never_reach_the_output(kern):
    """Whatever a masked cell's V holds (an unused cache cell, a key a causal row must not see), the
    output stays as with zeros there: the BF16 kernel gives a masked key weight exactly 0; the F32
    kernels' exp bottoms out at exp(-87) ~ 1.6e-38 (so 1e20 there moves nothing beyond 1e-12; the cache
    holds F16, at most 65504), where a key let through would add about 1e20 / n_kv."""
    if kern not in _available():
        pytest.skip(f"this CPU does not run {kern}")
    q, k, v, mask = _case(128, 4, 2, 40, 50, 30, seed=3)
    hidden = mask == -np.inf  # [n, n_kv]
    out = _core._attention(q, k, v, mask.view(np.uint16), kern, 2)
    for cells in (np.nonzero(hidden.all(axis=0))[0], 50 + np.arange(1, 40)):  # the padding; what row 0 must not see
        huge = v.copy()
        huge[cells] = 1e20
        got = _core._attention(q, k, huge, mask.view(np.uint16), kern, 2)
        rows = hidden[:, cells].all(axis=1)  # the rows that see none of these cells
        assert rows.any()
        if kern == "avx512_bf16":
            assert np.array_equal(got[rows], out[rows])
        else:
            assert np.abs(got[rows] - out[rows]).max() <= 1e-12


def test_bf16_results_do_not_depend_on_threads():
    """Each output row is computed by one task, whatever the thread count: the same bits on 1, 2 and 3."""
    if "avx512_bf16" not in _available():
        pytest.skip("this CPU lacks AVX512_BF16")
    q, k, v, mask = _case(128, 8, 2, 100, 70, 20, seed=5)
    runs = [_core._attention(q, k, v, mask.view(np.uint16), "avx512_bf16", t) for t in (1, 2, 3)]
    assert np.array_equal(runs[0], runs[1]) and np.array_equal(runs[0], runs[2])


def test_bf16_tiles_against_vdpbf16ps(tmp_path):
    """On AMX the products run on the tiles; AUTOGLM_GEMM_ISA=avx512_bf16 (read once per process: a
    child) keeps them on vdpbf16ps. The same BF16 operands, sums in another order."""
    need_isa("amx")
    if _core._gemm_isa() != "amx":
        pytest.skip(f"AUTOGLM_GEMM_ISA={_core._gemm_isa()} keeps the tiles idle in this process")
    q, k, v, mask = _case(128, 8, 2, 100, 300, 40, seed=7)
    ref, scale, _ = _reference(q, k, v, mask)
    tiles = _core._attention(q, k, v, mask.view(np.uint16), "avx512_bf16", 2)
    child = ("import sys, numpy as np\nfrom autoglm_gguf import _core\n"
             "q, k, v, m = (np.load(sys.argv[1] + f'.{x}.npy') for x in 'qkvm')\n"
             "np.save(sys.argv[1] + '.out.npy', _core._attention(q, k, v, m, 'avx512_bf16', 2))\n")
    stem = str(tmp_path / "attn")
    for name, arr in zip("qkvm", (q, k, v, mask.view(np.uint16))):
        np.save(f"{stem}.{name}.npy", arr)
    env = dict(os.environ, AUTOGLM_GEMM_ISA="avx512_bf16")
    proc = subprocess.run([sys.executable, "-c", child, stem], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    vdp = np.load(f"{stem}.out.npy")
    assert not np.array_equal(tiles, vdp)  # two code paths ran
    # a score summed in another order can round its weight to the next BF16 value (2 eps apart)
    assert np.all(np.abs(tiles - vdp) <= 2 * EPS_BF16 * scale)


def test_bad_arguments_are_refused():
    q, k, v, mask = _case(64, 4, 2, 8, 0, 0)
    with pytest.raises(ValueError, match="unknown"):
        _core._attention(q, k, v, None, "mmx")
    with pytest.raises(ValueError, match="not one of our kernels"):
        _core._attention(q, k, v, None, "ggml")
    with pytest.raises(ValueError, match="one head_dim"):
        _core._attention(q, k[:, :, :32].copy(), v[:, :, :32].copy(), None)
    with pytest.raises(ValueError, match="multiple of n_head_kv"):
        _core._attention(q[:, :3].copy(), k, v, None)
    with pytest.raises(ValueError, match="mask must be"):
        _core._attention(q, k, v, mask[:, :4].view(np.uint16).copy())


_PROMPT_CHILD = ("import sys\nfrom autoglm_gguf import _core\n"
                 "m = _core.TextModel(sys.argv[1], n_threads=2)\n"
                 "s = _core.Session(m, n_ctx=256, kv_type='f16', attention=sys.argv[3])\n"
                 "s.eval_tokens([5 + i % 300 for i in range(int(sys.argv[2]))], 'last')\n")


def _prompt_attention(path, n_tokens: int, attention: str = "auto", **env) -> str:
    """The attention kernel family a prompt of n_tokens ran (one micro-batch, f16 cache), by the profile."""
    proc = subprocess.run([sys.executable, "-c", _PROMPT_CHILD, str(path), str(n_tokens), attention],
                          env=dict(os.environ, AUTOGLM_PROFILE="1", AUTOGLM_GEMM="all", **env), capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    families = [f for f in ("ATTENTION bf16 (ours)", "ATTENTION (ours)", "FLASH_ATTN_EXT") if f in proc.stderr]
    assert len(families) == 1, proc.stderr
    return families[0]


def test_a_prompt_attends_in_bf16_where_its_matrices_run_on_the_bf16_tiles(tiny_checkpoint, convert_tiny):
    """"auto" keeps the F32 kernel, except for a micro-batch whose query matrix runs on the BF16 tiles
    (quantized weights, AMX, rows past the tiles' crossover: 96 for Q4_0): its arithmetic is BF16
    already. The int8 tiles (AUTOGLM_AMX_TILES=int8, or fewer rows), a kernel named (attention='avx512')
    and an F32 file keep F32; attention='avx512_bf16' asks for BF16 anywhere the CPU has it."""
    q4, _ = convert_tiny(tiny_checkpoint, "q4_0", "f16")
    f32, _ = convert_tiny(tiny_checkpoint, "f32", "f16")
    avail = _available()
    if not _f32_kernels():
        assert _prompt_attention(q4, 100) == "FLASH_ATTN_EXT"
        return
    amx = _core._gemm_isa() == "amx"
    bf16, f32_kernel = "ATTENTION bf16 (ours)", "ATTENTION (ours)"
    assert _prompt_attention(q4, 100) == (bf16 if amx else f32_kernel)
    assert _prompt_attention(q4, 64) == f32_kernel
    assert _prompt_attention(q4, 100, AUTOGLM_AMX_TILES="int8") == f32_kernel
    assert _prompt_attention(f32, 100) == f32_kernel
    if "avx512" in avail:
        assert _prompt_attention(q4, 100, "avx512") == f32_kernel
    if "avx512_bf16" in avail:
        assert _prompt_attention(f32, 100, "avx512_bf16") == bf16
