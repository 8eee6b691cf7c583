"""Obtain pinned source trees from the llama-cpp-python sdist on PyPI (nothing of it is committed here).

* ``--tree ggml`` (what the build uses): ``vendor/llama.cpp/ggml``, ggml 0.25.3.
* ``--tree converter`` (what the compatibility tests use): llama.cpp's own HF->GGUF converter
  (``convert_hf_to_gguf.py``, ``conversion/``, ``gguf-py/``) from the same sdist.

Run by CMake at configure time (and by the tests), it makes sure the tree exists in a per-user
cache and prints its path:

1. if ``<cache>/<pin>/<tree>`` exists with a stamp matching the pin, reuse it;
2. otherwise get the sdist with ``python -m pip download`` (or take the file named by
   ``--sdist`` / ``$AUTOGLM_GGML_SDIST``), check its sha256 against the pin, and extract only the
   needed paths, atomically (temp dir + rename), so concurrent builds never see half a tree.

Exit code 0 with the path on stdout, or non-zero with an actionable message on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# The pin: ggml 0.25.3 as shipped in this sdist. sha256 of the .tar.gz that pip downloads.
PIN_PACKAGE = "llama-cpp-python"
PIN_VERSION = "0.3.36"
PIN_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"

VENDOR = "vendor/llama.cpp/"
TREES = {
    # tree name -> (paths under vendor/llama.cpp, a file that must exist afterwards)
    "ggml": (("ggml",), "ggml/CMakeLists.txt"),
    "converter": (("convert_hf_to_gguf.py", "conversion", "gguf-py"), "convert_hf_to_gguf.py"),
}


def default_cache_root() -> Path:
    env = os.environ.get("AUTOGLM_GGML_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "autoglm-gguf" / "ggml"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FetchError(Exception):
    pass


def _pip_download_cmd(package: str, version: str, dest: Path, isolated: bool) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", package,
           "--disable-pip-version-check", "--quiet", "-d", str(dest), f"{package}=={version}"]
    if not isolated:
        cmd.insert(4, "--no-build-isolation")
    return cmd


def download_sdist(package: str, version: str, dest: Path) -> Path:
    # pip reads the sdist's metadata, which runs its build backend (scikit-build-core). Inside our own
    # build's isolated environment that backend is already installed, so no nested environment is made;
    # anywhere else (a test run, a plain virtualenv) pip gets it in an isolated one of its own.
    have_backend = importlib.util.find_spec("scikit_build_core") is not None
    attempts = [False, True] if have_backend else [True]
    for isolated in attempts:
        cmd = _pip_download_cmd(package, version, dest, isolated)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(dest.glob("*.tar.gz"))
        if proc.returncode == 0 and found:
            return found[0]
    raise FetchError(
        f"`{' '.join(cmd[1:])}` failed (exit {proc.returncode}).\n{proc.stderr.strip()[-2000:]}\n"
        "The build needs the llama-cpp-python sdist from PyPI for its bundled ggml. Either make PyPI "
        "reachable for pip, or download the sdist elsewhere and point AUTOGLM_GGML_SDIST=/path/to/"
        f"{package.replace('-', '_')}-{version}.tar.gz at it, or build with "
        "-DAUTOGLM_GGML_SOURCE_DIR=/path/to/ggml or -DAUTOGLM_USE_SYSTEM_GGML=ON (via CMAKE_ARGS).")


def extract(sdist: Path, paths: tuple[str, ...], must_exist: str, target: Path, sha: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                parts = m.name.split("/", 1)  # drop the "llama_cpp_python-X.Y.Z/" top directory
                if len(parts) != 2 or not parts[1].startswith(VENDOR) or not (m.isfile() or m.isdir()):
                    continue  # also: no links or devices out of a download
                rel = parts[1][len(VENDOR):]
                if any(rel == p or rel.startswith(p + "/") for p in paths):
                    m.name = rel
                    members.append(m)
            # The "data" filter (3.10.12+/3.11.4+) refuses absolute paths and escapes.
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **extra)
        if not (tmp / must_exist).is_file():
            raise FetchError(f"{sdist} has no {VENDOR}{must_exist}; is it the right sdist?")
        (tmp / "STAMP").write_text(sha + "\n")
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / must_exist).is_file():  # else another build finished first: keep its tree
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_tree(tree: str, *, cache: Path | None = None, sdist: str | None = None,
                package: str = PIN_PACKAGE, version: str = PIN_VERSION, sha256: str = PIN_SHA256) -> Path:
    paths, must_exist = TREES[tree]
    target = (cache or default_cache_root()) / f"{package}-{version}-{sha256[:16]}" / tree
    stamp = target / "STAMP"
    if stamp.is_file() and stamp.read_text().strip() == sha256 and (target / must_exist).is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="autoglm-ggml-dl-") as dl:
        path = Path(sdist) if sdist else download_sdist(package, version, Path(dl))
        if not path.is_file():
            raise FetchError(f"sdist {path} does not exist")
        got = sha256_of(path)
        if got != sha256:
            raise FetchError(
                f"checksum mismatch for {path.name}: expected sha256 {sha256}, got {got}. The file is not "
                "the pinned release (corrupt download or a different index?). Remove it and retry, or build "
                "against your own tree with -DAUTOGLM_GGML_SOURCE_DIR=/path/to/ggml.")
        extract(path, paths, must_exist, target, sha256)
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", choices=sorted(TREES), default="ggml")
    ap.add_argument("--cache", default=None, help="cache root (default: $AUTOGLM_GGML_CACHE or ~/.cache/autoglm-gguf/ggml)")
    ap.add_argument("--sdist", default=os.environ.get("AUTOGLM_GGML_SDIST"), help="use this sdist file instead of pip")
    ap.add_argument("--sha256", default=PIN_SHA256, help=argparse.SUPPRESS)  # for tests of the mismatch path
    args = ap.parse_args()
    try:
        target = ensure_tree(args.tree, cache=Path(args.cache) if args.cache else None, sdist=args.sdist,
                             sha256=args.sha256)
    except FetchError as e:
        print(f"autoglm-gguf: cannot obtain the pinned {args.tree} sources: {e}", file=sys.stderr)
        sys.exit(1)
    print(target / "ggml" if args.tree == "ggml" else target)


if __name__ == "__main__":
    main()
