"""The pinned-ggml fetch step of the build: checksum enforcement and clear failures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FETCH = Path(__file__).resolve().parents[1] / "cmake" / "fetch_ggml.py"


def run_fetch(*args, env=None):
    return subprocess.run([sys.executable, str(FETCH), *args], capture_output=True, text=True, env=env)


def test_checksum_mismatch_stops_with_a_message(tmp_path):
    fake = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    fake.write_bytes(b"this is not the pinned sdist")
    proc = run_fetch("--cache", str(tmp_path / "cache"), "--sdist", str(fake))
    assert proc.returncode == 1
    assert "checksum mismatch" in proc.stderr and "AUTOGLM_GGML_SOURCE_DIR" in proc.stderr
    assert not any((tmp_path / "cache").rglob("CMakeLists.txt")), "nothing may be extracted from a bad file"


def test_missing_sdist_file(tmp_path):
    proc = run_fetch("--cache", str(tmp_path / "cache"), "--sdist", str(tmp_path / "nope.tar.gz"))
    assert proc.returncode == 1 and "does not exist" in proc.stderr


def test_cached_tree_is_reused_without_download(tmp_path):
    # The build already populated the default cache; asking again must answer from it, even with
    # pip made unusable.
    import os

    env = {"PATH": "/nonexistent", "HOME": str(Path.home()), "PYTHONPATH": "/nonexistent-pip"}
    env.update({k: os.environ[k] for k in ("AUTOGLM_GGML_CACHE", "XDG_CACHE_HOME") if k in os.environ})
    first = run_fetch("--tree", "ggml")
    assert first.returncode == 0, first.stderr
    again = subprocess.run([sys.executable, "-S", str(FETCH), "--tree", "ggml"], capture_output=True, text=True, env=env)
    assert again.returncode == 0 and again.stdout == first.stdout
    assert (Path(first.stdout.strip()) / "CMakeLists.txt").is_file()
