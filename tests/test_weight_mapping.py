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


def test_repacked_weights_load_on_threads_with_progress_abort_and_errors(tiny_checkpoint, convert_tiny):
    """ggml's repacking takes a whole tensor per call, so the repacked tensors are set several at a time
    (weight_store::set_repacked); progress is still reported in order from the loading thread, an abort
    (or a callback that raises, which the binding turns into one) stops the other threads and surfaces,
    and the weights are right."""
    from autoglm_gguf import _core

    if not _core._gemm_available():
        pytest.skip("ggml repacks Q4_0 only on AVX2 CPUs")
    text, _ = convert_tiny(tiny_checkpoint, "q4_0", "f16")
    seen = []
    m = _core.TextModel(str(text), n_threads=2, progress=seen.append)
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] == 1.0
    # the same file in its GGUF layout (nothing repacked), through ggml's kernels on both sides: a tensor
    # repacked into the wrong place, or not at all, would change the logits wholesale
    ids = list(range(5, 45))
    flat = _core.TextModel(str(text), n_threads=2, repack=False)
    got = _core.Session(m, n_ctx=128, kv_type="f32").eval_tokens(ids, "all")
    want = _core.Session(flat, n_ctx=128, kv_type="f32").eval_tokens(ids, "all")
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()

    with pytest.raises(KeyboardInterrupt, match="aborted"):
        _core.TextModel(str(text), n_threads=2, progress=lambda f: f < 0.3 or f >= 1.0)

    def boom(f):
        if 0 < f < 1:
            raise ValueError("progress callback failed")
        return True

    with pytest.raises(KeyboardInterrupt, match="aborted"):
        _core.TextModel(str(text), n_threads=2, progress=boom)
    again = _core.TextModel(str(text), n_threads=2)  # nothing left behind by the failed loads
    assert again.weight_bytes == m.weight_bytes
