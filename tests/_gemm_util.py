"""What the prompt-GEMM tests share: a prompt's logits computed in a child process, with our GEMMs or
with ggml's kernels (AUTOGLM_GEMM=ggml is read once per process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

_CHILD = ("import sys, numpy as np\nfrom autoglm_gguf import _core\n"
          "m = _core.TextModel(sys.argv[1], n_threads=2)\n"
          "ids = [int(i) for i in np.random.default_rng(1).integers(5, 500, 77)]\n"
          "out = _core.Session(m, n_ctx=256, kv_type='f32', n_batch=64).eval_tokens(ids, 'all')\n"
          "np.save(sys.argv[2], out)\n")


def prompt_logits(path: Path, env_gemm: str | None) -> np.ndarray:
    """All logits of a 77-token prompt in micro-batches of 64 and 13 rows (ours applies to the first only)."""
    out = Path(str(path) + f".{env_gemm or 'ours'}.npy")
    env = {k: v for k, v in os.environ.items() if k != "AUTOGLM_GEMM"}
    if env_gemm:
        env["AUTOGLM_GEMM"] = env_gemm
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(out)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return np.load(out)
