"""What the prompt-GEMM tests share: a prompt's logits computed in a child process, with our GEMMs or
with ggml's kernels (AUTOGLM_GEMM=ggml is read once per process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

_CHILD = ("import sys, numpy as np\nfrom autoglm_gguf import _core\n"
          "m = _core.TextModel(sys.argv[1], n_threads=2, repack=sys.argv[5] == '1')\n"
          "ids = [int(i) for i in np.random.default_rng(1).integers(5, 500, int(sys.argv[4]))]\n"
          "out = _core.Session(m, n_ctx=256, kv_type='f32', n_batch=int(sys.argv[3])).eval_tokens(ids, 'all')\n"
          "np.save(sys.argv[2], out)\n")


def prompt_logits(path: Path, env_gemm: str | None, isa: str | None = None, n_batch: int = 64, n_tokens: int = 77,
                  profile: list[str] | None = None, repack: bool = True, tiles: str | None = None) -> np.ndarray:
    """All logits of an n_tokens prompt (default 77: micro-batches of 64 and 13 rows, ours applies to the
    first only, except on weights in our interleaved layout; n_batch=1 decodes token by token), with our
    kernels of `isa` (AUTOGLM_GEMM_ISA; None: the best this machine runs). With `profile` (a list),
    AUTOGLM_PROFILE's report is appended to it. repack=False loads with TextModel(repack=False): no
    repacked layouts, ggml's or ours (block32_x16.h). `tiles`: AUTOGLM_AMX_TILES (int8 or bf16; None: the
    graph's choice by rows)."""
    out = Path(str(path) + f".{env_gemm or 'ours'}.{isa or 'best'}.{n_batch}.{n_tokens}.{int(repack)}.{tiles}.npy")
    env = {k: v for k, v in os.environ.items()
           if k not in ("AUTOGLM_GEMM", "AUTOGLM_GEMM_ISA", "AUTOGLM_PROFILE", "AUTOGLM_AMX_TILES")}
    if env_gemm:
        env["AUTOGLM_GEMM"] = env_gemm
    if isa:
        env["AUTOGLM_GEMM_ISA"] = isa
    if tiles:
        env["AUTOGLM_AMX_TILES"] = tiles
    if profile is not None:
        env["AUTOGLM_PROFILE"] = "1"
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(out), str(n_batch), str(n_tokens), str(int(repack))],
                          env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    if profile is not None:
        profile.append(proc.stderr)
    return np.load(out)


def check_against_ggml(quantized: Path, reference: Path, mirrors_ggml_order: bool) -> None:
    """A quantized decoder's prompt logits through our GEMMs (AUTOGLM_GEMM=all: also below a kernel's
    break-even K) against ggml's kernels (AUTOGLM_GEMM=ggml).

    The integer dot products are always ggml's. Where our F32 steps also follow ggml's kernel
    (`mirrors_ggml_order`: Q4_0 and Q4_K against ggml's AVX2 kernels, ggml_avx2_kernels()), the logits
    are equal. Otherwise the sums differ in rounding, and on these random models a
    float difference can flip an activation's int8 rounding a layer later, which the chaotic network
    amplifies (measured: up to 1.3% of the largest logit). Then: as accurate as ggml's against the
    unquantized `reference` file, and the difference a small part of the quantization error itself
    (measured: at most a tenth), where a misread block would be comparable to it."""
    # "all": ours at any K; on AMX the int8 tiles, whose integers are ggml's (check_bf16_tiles_in_model
    # holds the BF16 ones to the same accuracy rule)
    ours, ggml = prompt_logits(quantized, "all", tiles="int8"), prompt_logits(quantized, "ggml")
    if mirrors_ggml_order:
        assert np.array_equal(ours, ggml), f"max |diff| {np.abs(ours - ggml).max():.3g}"
        return
    ref = prompt_logits(reference, None)
    err_ours, err_ggml = np.abs(ours - ref).max(), np.abs(ggml - ref).max()
    assert err_ours <= 1.1 * err_ggml + 1e-3 * np.abs(ref).max()
    assert np.abs(ours - ggml).max() <= 0.25 * err_ggml


def ggml_avx2_kernels() -> bool:
    """ggml's CPU kernels in this process are its AVX2 build (no AVX-512 or AVX-VNNI paths compiled in),
    whose Q4_0/Q4_K kernels our F32 order mirrors."""
    from autoglm_gguf import _core

    features = set(_core.cpu_features())
    return "AVX2" in features and not any(f.startswith(("AVX512", "AVX_VNNI", "AMX")) for f in features)


ISAS = ("avx2", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx")  # every variant of our kernels (native/src/gemm.h: gemm_isa)


def need_isa(isa: str) -> None:
    """Skip, with the reason, where this machine does not run `isa`."""
    from autoglm_gguf import _core

    if isa not in _core._gemm_isas():
        pytest.skip(f"this CPU (or its OS) does not run {isa}; it runs {_core._gemm_isas()}")


def check_isas_agree(quantized: Path) -> None:
    """The decoder's prompt logits through our kernels are the same bits whichever instruction set the
    graph picked (AUTOGLM_GEMM_ISA=avx2 against the machine's best, and against AVX-VNNI where the machine
    has it beside a better one); on AMX, the int8 tiles (the BF16 ones round the operands: check_bf16_tiles)."""
    from autoglm_gguf import _core

    if _core._gemm_isas() == ["avx2"]:
        pytest.skip("this CPU runs only the AVX2 variant of our kernels")
    avx2 = prompt_logits(quantized, "all", isa="avx2")
    best = prompt_logits(quantized, "all", tiles="int8")
    assert np.array_equal(best, avx2), np.abs(best - avx2).max()
    if "avx_vnni" in _core._gemm_isas() and _core._gemm_isa() != "avx_vnni":
        vnni256 = prompt_logits(quantized, "all", isa="avx_vnni")
        assert np.array_equal(vnni256, avx2), np.abs(vnni256 - avx2).max()


def bf16_rounded(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to BF16 (nearest, ties to even; finite values), as float64."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32).astype(np.float64)


def check_bf16_tiles(wq: np.ndarray, qtype: str, a: np.ndarray, deq: np.ndarray, threads: int) -> None:
    """Our GEMM on BF16 tiles (AMX; native/src/gemm_dequant_tiles.h) for `qtype` weights wq against
    activations a, deq the weights as ggml dequantizes them (exact in float32). It rounds each
    activation and each weight to BF16 and sums the exact products in F32: within K x 2^-24 of
    sum |products| of the product of the rounded operands, so a weight read from the wrong place, a
    wrong scale or a wrong pair order fails; and within 2^-8 + K x 2^-24 of sum |a w| of the exact
    product (the bound native/src/gemm.h states)."""
    from autoglm_gguf import _core

    m, k = a.shape
    ra, rw = bf16_rounded(a), bf16_rounded(deq.astype(np.float32))
    rounded, rounded_abs = ra @ rw.T, np.abs(ra) @ np.abs(rw).T
    exact = a.astype(np.float64) @ deq.astype(np.float64).T
    exact_abs = np.abs(a.astype(np.float64)) @ np.abs(deq.astype(np.float64)).T
    got = _core._gemm(wq, a, qtype, threads, "amx", tiles="bf16")
    assert got.shape == (m, deq.shape[0])
    assert np.all(np.abs(got - rounded) <= 1.01 * k * 2.0**-24 * rounded_abs + 1e-30), (m, deq.shape[0], k, threads)
    assert np.all(np.abs(got - exact) <= (2.0**-8 + 1.01 * k * 2.0**-24) * exact_abs + 1e-30), (m, deq.shape[0], k, threads)


def check_bf16_tiles_in_model(quantized: Path, reference: Path, types: list[str]) -> None:
    """A prompt's logits with the BF16 tiles (AUTOGLM_AMX_TILES=bf16; `types`' GEMMs named so in the
    profile) and with the int8 ones: the same quantized weights, the activations rounded to BF16 instead
    of to 8 bits per block, so no further from the unquantized `reference` file's logits than the int8
    path. (On these random models a rounding difference is amplified layer by layer, so the two paths'
    logits differ by about as much as the int8 path's error where the weights add little error of
    their own, as Q8_0's.)"""
    need_isa("amx")
    prof: list[str] = []
    bf16 = prompt_logits(quantized, "all", tiles="bf16", profile=prof)
    int8 = prompt_logits(quantized, "all", tiles="int8")
    ref = prompt_logits(reference, None)
    for t in types:
        line = next((ln for ln in prof[0].splitlines() if ln.strip().startswith(f"GEMM {t} on BF16 tiles (ours)")), "")
        assert "of amx_bf16 peak" in line, (t, prof[0])
    assert "GEMM rows to BF16 (ours)" in prof[0]
    err_bf16, err_int8 = np.abs(bf16 - ref).max(), np.abs(int8 - ref).max()
    assert err_bf16 <= 1.1 * err_int8 + 1e-3 * np.abs(ref).max(), (err_bf16, err_int8)


_BLOCK32_BYTES = {"q4_0": 18, "q5_0": 22, "q8_0": 34, "q4_1": 20, "q5_1": 24}
AFFINE32 = ("q4_1", "q5_1")  # w = d u + m


def block32_weights(wq: np.ndarray, qtype: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The integer weights [n, nb, 32] and their F16 scales [n, nb] of a GGUF-layout block-32 matrix
    (the affine types' unsigned u; their offsets m: block32_mins)."""
    n, nb = wq.shape[0], k // 32
    blocks = wq.reshape(n, nb, _BLOCK32_BYTES[qtype])
    dw = blocks[:, :, :2].copy().view(np.float16)[:, :, 0].astype(np.float64)
    if qtype == "q8_0":
        return blocks[:, :, 2:].copy().view(np.int8).astype(np.int64), dw
    qs = blocks[:, :, -16:]
    nib = np.concatenate([qs & 0x0F, qs >> 4], axis=2).astype(np.int64)
    if qtype in ("q4_0", "q4_1"):
        return nib - (8 if qtype == "q4_0" else 0), dw
    at = 2 if qtype == "q5_0" else 4
    qh = blocks[:, :, at:at + 4].copy().view("<u4")[:, :, 0].astype(np.int64)
    high = (qh[:, :, None] >> np.arange(32)) & 1
    return nib + 16 * high - (16 if qtype == "q5_0" else 0), dw


def block32_mins(wq: np.ndarray, qtype: str, k: int) -> np.ndarray:
    """The F16 offsets m [n, nb] of an affine block-32 matrix (zero for the others)."""
    n, nb = wq.shape[0], k // 32
    if qtype not in AFFINE32:
        return np.zeros((n, nb))
    blocks = wq.reshape(n, nb, _BLOCK32_BYTES[qtype])
    return blocks[:, :, 2:4].copy().view(np.float16)[:, :, 0].astype(np.float64)


def block32_dequantized(wq: np.ndarray, qtype: str, k: int) -> np.ndarray:
    wi, dw = block32_weights(wq, qtype, k)
    return (wi * dw[:, :, None] + block32_mins(wq, qtype, k)[:, :, None]).reshape(wq.shape[0], k)


def q8_0_activations(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows [m, k] quantized as ggml's Q8_0: int8 values [m, nb, 32] and F16-rounded scales [m, nb]."""
    x = a.reshape(a.shape[0], a.shape[1] // 32, 32).astype(np.float32)
    amax = np.abs(x).max(axis=2)
    d = (amax / np.float32(127)).astype(np.float32)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    da = d.astype(np.float16).astype(np.float64)  # ggml keeps the Q8_0 scale in F16
    return np.rint(x * inv[:, :, None]).astype(np.int64), da


def block32_reference(wq: np.ndarray, qtype: str, a: np.ndarray) -> np.ndarray:
    """a [m, k] x wq^T in exact arithmetic: int64 block dot products, scaled in float64 (an affine
    type's m times the activations' block sums added)."""
    wi, dw = block32_weights(wq, qtype, a.shape[1])
    q, da = q8_0_activations(a)
    dots = np.einsum("mbk,nbk->mnb", q, wi)  # exact int64
    out = np.einsum("mnb,mb,nb->mn", dots.astype(np.float64), da, dw)
    return out + np.einsum("mb,nb->mn", da * q.sum(axis=2), block32_mins(wq, qtype, a.shape[1]))


def k_quant_models(out: Path, text: dict) -> tuple[Path, Path]:
    """(F16, Q4_K_M) files in `out` of a decoder with the `text` config (widths multiples of 256, which
    Q4_K needs): the Q4_K matrices are held by ggml's repacked buffer, next to Q6_K ones."""
    from gguf import GGMLQuantizationType, GGUFReader

    from autoglm_gguf._tiny.checkpoint import make_config, write_checkpoint
    from autoglm_gguf.convert import ConvertOptions, convert_checkpoint
    from autoglm_gguf.quantize import quantize_gguf

    ckpt = write_checkpoint(out / "ckpt", make_config(text=text), dtype="f32", seed=3)
    f16 = out / "f16.gguf"
    convert_checkpoint(ckpt, ConvertOptions(outfile=f16, outtype="f16", mmproj=False, progress=False))
    q = out / "q4_k_m.gguf"
    quantize_gguf(f16, q, "q4_k_m", progress=False)
    types = {t.tensor_type for t in GGUFReader(q).tensors if t.name.startswith("blk.")}
    assert GGMLQuantizationType.Q4_K in types
    return f16, q


def _k_scales_mins(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's get_scale_min_k4 over the 12 packed bytes s [n, nb, 12]: 6-bit scales and mins [n, nb, 8]."""
    sc = np.empty(s.shape[:2] + (8,), np.int64)
    mn = np.empty_like(sc)
    for j in range(8):
        if j < 4:
            sc[:, :, j], mn[:, :, j] = s[:, :, j] & 63, s[:, :, j + 4] & 63
        else:
            sc[:, :, j] = (s[:, :, j + 4] & 0x0F) | ((s[:, :, j - 4] >> 6) << 4)
            mn[:, :, j] = (s[:, :, j + 4] >> 4) | ((s[:, :, j] >> 6) << 4)
    return sc, mn


def q4_k_fields(wq: np.ndarray, k: int):
    """The GGUF layout's fields: d, dmin [n, nb]; sc, m [n, nb, 8]; q [n, nb, 256] (0..15)."""
    n, nb = wq.shape[0], k // 256
    blocks = wq.reshape(n, nb, 144)
    d = blocks[:, :, 0:2].copy().view(np.float16)[:, :, 0].astype(np.float64)
    dmin = blocks[:, :, 2:4].copy().view(np.float16)[:, :, 0].astype(np.float64)
    sc, mn = _k_scales_mins(blocks[:, :, 4:16].astype(np.int64))
    qs = blocks[:, :, 16:].reshape(n, nb, 4, 32).astype(np.int64)  # 4 chunks of 32 bytes: 64 elements each
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=3).reshape(n, nb, 256)
    return d, dmin, sc, mn, q


def q5_k_fields(wq: np.ndarray, k: int):
    """Q5_K's fields as q4_k_fields's, q in 0..31: the nibbles of qs plus 16 x bit j of qh[l] for
    element l of sub-block j."""
    n, nb = wq.shape[0], k // 256
    blocks = wq.reshape(n, nb, 176)
    d = blocks[:, :, 0:2].copy().view(np.float16)[:, :, 0].astype(np.float64)
    dmin = blocks[:, :, 2:4].copy().view(np.float16)[:, :, 0].astype(np.float64)
    sc, mn = _k_scales_mins(blocks[:, :, 4:16].astype(np.int64))
    qh = blocks[:, :, 16:48].astype(np.int64)                      # [n, nb, 32]
    qs = blocks[:, :, 48:].reshape(n, nb, 4, 32).astype(np.int64)  # sub-block pairs
    nib = np.concatenate([qs & 0x0F, qs >> 4], axis=3).reshape(n, nb, 8, 32)
    high = (qh[:, :, None, :] >> np.arange(8)[None, None, :, None]) & 1  # [n, nb, 8 sub-blocks, 32]
    return d, dmin, sc, mn, (nib + 16 * high).reshape(n, nb, 256)


def q8_k(a: np.ndarray):
    m, k = a.shape
    x = a.reshape(m, k // 256, 256).astype(np.float32)
    first = np.abs(x).argmax(axis=2)  # the first element of largest magnitude, as ggml's strict '>'
    mx = np.take_along_axis(x, first[:, :, None], axis=2)[:, :, 0]
    safe = np.where(mx != 0, mx, 1).astype(np.float32)
    iscale = np.where(mx != 0, np.float32(-127) / safe, 0).astype(np.float32)
    q = np.minimum(np.rint(x * iscale[:, :, None]), 127).astype(np.int64)
    d = np.where(mx != 0, np.float32(1) / np.where(iscale != 0, iscale, 1), 0).astype(np.float32)
    return q, d.astype(np.float64)


def k_quant_sums(wq: np.ndarray, a: np.ndarray, qtype: str = "q4_k"):
    """The exact integers of Q4_K/Q5_K x Q8_K products: isum, msum [m, n, nb] (int64), with the F32
    scales d, dmin [n, nb] and da [m, nb] (float64)."""
    k = a.shape[1]
    d, dmin, sc, mn, qw = {"q4_k": q4_k_fields, "q5_k": q5_k_fields}[qtype](wq, k)
    qa, da = q8_k(a)
    n, nb = d.shape
    sub = np.einsum("mbjk,nbjk->mnbj", qa.reshape(-1, nb, 8, 32), qw.reshape(n, nb, 8, 32))  # exact int64
    sums = qa.reshape(-1, nb, 8, 32).sum(axis=3)                                               # [m, nb, 8]
    return np.einsum("mnbj,nbj->mnb", sub, sc), np.einsum("mbj,nbj->mnb", sums, mn), d, dmin, da


def q4_k_reference(wq: np.ndarray, a: np.ndarray, qtype: str = "q4_k") -> np.ndarray:
    """Exact Q4_K (or Q5_K) x Q8_K products (float64) of GGUF-layout rows wq and activation rows a: [m, n]."""
    isum, msum, d, dmin, da = k_quant_sums(wq, a, qtype)
    return np.einsum("mb,mnb->mn", da, isum * d[None] - msum * dmin[None])


def q6_k_fields(wq: np.ndarray, k: int):
    """The GGUF layout's fields: d [n, nb]; sc [n, nb, 16] (int8, one per 16 weights); q [n, nb, 256]
    (0..63, the weight + 32), in ggml's dequantize_row_q6_K order."""
    n, nb = wq.shape[0], k // 256
    blocks = wq.reshape(n, nb, 210)
    ql = blocks[:, :, :128].astype(np.int64)
    qh = blocks[:, :, 128:192].astype(np.int64)
    sc = blocks[:, :, 192:208].copy().view(np.int8).astype(np.int64)
    d = blocks[:, :, 208:210].copy().view(np.float16)[:, :, 0].astype(np.float64)
    q = np.empty((n, nb, 256), np.int64)
    for half in range(2):
        lo, hi, h = ql[:, :, 64 * half:64 * half + 32], ql[:, :, 64 * half + 32:64 * half + 64], qh[:, :, 32 * half:32 * half + 32]
        base = 128 * half
        q[:, :, base:base + 32] = (lo & 0x0F) | ((h & 3) << 4)
        q[:, :, base + 32:base + 64] = (hi & 0x0F) | (((h >> 2) & 3) << 4)
        q[:, :, base + 64:base + 96] = (lo >> 4) | (((h >> 4) & 3) << 4)
        q[:, :, base + 96:base + 128] = (hi >> 4) | (((h >> 6) & 3) << 4)
    return d, sc, q


def q6_k_reference(wq: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Exact Q6_K x Q8_K products (float64) of GGUF-layout rows wq and activation rows a: [m, n]."""
    d, sc, q = q6_k_fields(wq, a.shape[1])
    qa, da = q8_k(a)
    n, nb = d.shape
    sub = np.einsum("mbjk,nbjk->mnbj", qa.reshape(-1, nb, 16, 16), (q - 32).reshape(n, nb, 16, 16))  # exact int64
    return np.einsum("mb,mnb->mn", da, (sub * sc[None]).sum(axis=3) * d[None])
