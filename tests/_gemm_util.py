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
          "m = _core.TextModel(sys.argv[1], n_threads=2)\n"
          "ids = [int(i) for i in np.random.default_rng(1).integers(5, 500, 77)]\n"
          "out = _core.Session(m, n_ctx=256, kv_type='f32', n_batch=64).eval_tokens(ids, 'all')\n"
          "np.save(sys.argv[2], out)\n")


def prompt_logits(path: Path, env_gemm: str | None, isa: str | None = None) -> np.ndarray:
    """All logits of a 77-token prompt in micro-batches of 64 and 13 rows (ours applies to the first only),
    with our kernels of `isa` (AUTOGLM_GEMM_ISA; None: the best this machine runs)."""
    out = Path(str(path) + f".{env_gemm or 'ours'}.{isa or 'best'}.npy")
    env = {k: v for k, v in os.environ.items() if k not in ("AUTOGLM_GEMM", "AUTOGLM_GEMM_ISA")}
    if env_gemm:
        env["AUTOGLM_GEMM"] = env_gemm
    if isa:
        env["AUTOGLM_GEMM_ISA"] = isa
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(out)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
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
    ours, ggml = prompt_logits(quantized, "all"), prompt_logits(quantized, "ggml")  # "all": ours at any K
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


ISAS = ("avx2", "avx512_vnni", "avx512_bf16")  # every variant of our kernels (native/src/gemm.h: gemm_isa)


def need_isa(isa: str) -> None:
    """Skip, with the reason, where this machine does not run `isa`."""
    from autoglm_gguf import _core

    if isa not in _core._gemm_isas():
        pytest.skip(f"this CPU (or its OS) does not run {isa}; it runs {_core._gemm_isas()}")


def check_isas_agree(quantized: Path) -> None:
    """The decoder's prompt logits through our kernels are the same bits whichever instruction set the
    graph picked (AUTOGLM_GEMM_ISA=avx2 against the machine's best)."""
    from autoglm_gguf import _core

    if _core._gemm_isas() == ["avx2"]:
        pytest.skip("this CPU runs only the AVX2 variant of our kernels")
    best = prompt_logits(quantized, "all")
    avx2 = prompt_logits(quantized, "all", isa="avx2")
    assert np.array_equal(best, avx2), np.abs(best - avx2).max()
