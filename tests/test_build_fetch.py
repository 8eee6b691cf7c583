"""The pinned-ggml fetch step of the build: checksum enforcement and clear failures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("backend", ["ggml-metal", "ggml-vulkan", "ggml-cuda"])
def test_the_fetched_tree_has_every_source_a_gpu_backend_builds_from(backend):
    """`-DGGML_METAL=ON` (macOS) and `-DGGML_CUDA=ON` cannot be built on this machine, so check what can
    be checked here: every source, shader and kernel file that the backend's CMakeLists names is in the
    tree our build extracts from the pinned sdist (an extraction that dropped, say, the .metal kernels
    would only fail on a user's Mac)."""
    proc = run_fetch("--tree", "ggml")
    assert proc.returncode == 0, proc.stderr
    src = Path(proc.stdout.strip()) / "src" / backend
    cmake = (src / "CMakeLists.txt").read_text()
    # Quoted strings with escapes are regular expressions and sed scripts, not file names.
    cmake = re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: "" if "\\" in m.group(0) else m.group(0), cmake)
    cmake = re.sub(r"(^|\s)#[^\n]*", r"\1", cmake)  # comments
    names = set(re.findall(r"[\w${}./-]+\.(?:cpp|c|m|metal|h|cu|cuh|comp)\b", cmake))
    checked = 0
    for pattern in re.findall(r'file\(GLOB\s+\w+\s+"([^"$]+)"\)', cmake):
        assert list(src.glob(pattern)), f"{backend}: its CMakeLists.txt globs {pattern}, which matches nothing in {src}"
        checked += 1
    for name in names:
        name = name.replace("${CMAKE_CURRENT_SOURCE_DIR}", str(src))
        if "$" in name or "*" in name:
            continue  # generated (in the build dir) or a glob
        path = Path(name) if Path(name).is_absolute() else src / name
        assert path.exists(), f"{backend}: {name} is named by its CMakeLists.txt but missing from {src}"
        checked += 1
    assert checked >= 5, f"{backend}: found only {checked} file names in its CMakeLists.txt"
    if backend == "ggml-metal":
        # The Metal kernels are compiled into the library (GGML_METAL_EMBED_LIBRARY): ggml is linked into
        # our extension, so there is no directory beside a binary to find a default.metallib in.
        kernels = sorted((src / "kernels").glob("*.metal"))
        assert len(kernels) >= 10
        ours = (Path(__file__).resolve().parents[1] / "cmake" / "ggml.cmake").read_text()
        assert re.search(r"set\(GGML_METAL_EMBED_LIBRARY ON", ours)
    if backend == "ggml-vulkan":
        assert len(list((src / "vulkan-shaders").glob("*.comp"))) >= 50
