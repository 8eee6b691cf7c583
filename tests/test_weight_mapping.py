"""A text model's CPU matrices that ggml keeps as stored (no repacking, no conversion) are read in
place from the file's mapping, as llama.cpp's mmap loading does: the load copies nothing, and the
logits are those of a copying load (AUTOGLM_MMAP=0)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

_CHILD = ("import sys, numpy as np\nfrom autoglm_gguf import _core\n"
          "m = _core.TextModel(sys.argv[1], n_threads=2)\n"
          "print(m.weight_bytes, m.mapped_bytes)\n"
          "ids = list(range(5, 45))\n"
          "np.save(sys.argv[2], _core.Session(m, n_ctx=128, kv_type='f32').eval_tokens(ids, 'all'))\n")


def _load(path, out, mmap: bool) -> tuple[int, int, np.ndarray]:
    env = {k: v for k, v in os.environ.items() if k != "AUTOGLM_MMAP"}
    if not mmap:
        env["AUTOGLM_MMAP"] = "0"
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(out)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    weight, mapped = (int(x) for x in proc.stdout.split())
    return weight, mapped, np.load(out)


@pytest.mark.parametrize("outtype", ["q8_0", "f32"])
def test_unrepacked_weights_are_read_in_place_with_the_same_logits(outtype, tiny_checkpoint, convert_tiny, tmp_path):
    text, _ = convert_tiny(tiny_checkpoint, outtype, "f16")
    weight, mapped, logits = _load(text, tmp_path / "mapped.npy", mmap=True)
    weight_c, mapped_c, logits_c = _load(text, tmp_path / "copied.npy", mmap=False)
    assert weight == weight_c
    # everything but what a copy needs (nothing here: Q8_0 and F32 are not repacked on x86) is mapped;
    # the copying load maps only the token embedding (read a row at a time)
    assert mapped >= 0.99 * weight and mapped_c < 0.5 * weight_c
    assert np.array_equal(logits, logits_c)


def test_repacked_weights_are_still_copied(tiny_checkpoint, convert_tiny):
    """Q4_0 matrices go into ggml's repacked buffer (8 rows interleaved), which needs its own copy."""
    from autoglm_gguf import _core

    if not _core._gemm_available():
        pytest.skip("ggml repacks Q4_0 only on AVX2 CPUs")
    text, _ = convert_tiny(tiny_checkpoint, "q4_0", "f16")
    m = _core.TextModel(str(text), n_threads=1)
    assert 0 < m.mapped_bytes < m.weight_bytes
