"""Obtain the pinned ggml source tree for the build.

ggml is not vendored in this repository.  The default build uses the ggml that ships inside the
PyPI sdist of llama-cpp-python (directory ``vendor/llama.cpp/ggml``).  This script, run by CMake at
configure time, makes sure that tree exists in a per-user cache and prints its path:

1. if ``<cache>/<pin>/ggml/CMakeLists.txt`` exists (and its stamp matches the pin), reuse it;
2. otherwise get the sdist with ``python -m pip download`` (or take the file named by
   ``--sdist`` / ``$AUTOGLM_GGML_SDIST``), check its sha256 against the pin, and extract only the
   ggml tree into the cache, atomically (temp dir + rename), so concurrent builds cannot see a
   half-extracted tree.

Exit code 0 with the path on stdout, or non-zero with an actionable message on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

GGML_SUBDIR = "vendor/llama.cpp/ggml"


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


def fail(msg: str) -> None:
    print(f"autoglm-gguf: cannot obtain ggml: {msg}", file=sys.stderr)
    sys.exit(1)


def download_sdist(package: str, version: str, dest: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
        "--no-binary", package, "--disable-pip-version-check", "--quiet",
        "-d", str(dest), f"{package}=={version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob("*.tar.gz"))
    if proc.returncode != 0 or not found:
        fail(
            f"`{' '.join(cmd[1:])}` failed (exit {proc.returncode}).\n{proc.stderr.strip()[-2000:]}\n"
            "The build needs the llama-cpp-python sdist from PyPI for its bundled ggml. Either make PyPI "
            "reachable for pip, or download the sdist elsewhere and point AUTOGLM_GGML_SDIST=/path/to/"
            f"{package.replace('-', '_')}-{version}.tar.gz at it, or build with "
            "-DAUTOGLM_GGML_SOURCE_DIR=/path/to/ggml or -DAUTOGLM_USE_SYSTEM_GGML=ON (via CMAKE_ARGS)."
        )
    return found[0]


def extract_ggml(sdist: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                parts = m.name.split("/", 1)
                if len(parts) == 2 and (parts[1] == GGML_SUBDIR or parts[1].startswith(GGML_SUBDIR + "/")):
                    if not (m.isfile() or m.isdir()):
                        continue  # no links or devices out of a download
                    m.name = "ggml" + parts[1][len(GGML_SUBDIR):]
                    members.append(m)
            if not members:
                fail(f"{sdist} has no {GGML_SUBDIR} directory; is it the right sdist?")
            # The "data" filter (3.10.12+/3.11.4+) refuses absolute paths and escapes.
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **extra)
        if not (tmp / "ggml" / "CMakeLists.txt").is_file():
            fail(f"extracted tree from {sdist} has no ggml/CMakeLists.txt")
        (tmp / "STAMP").write_text(sha256_of(sdist) + "\n")
        try:
            os.replace(tmp, target)
        except OSError:
            # Another build finished first: keep its tree.
            if not (target / "ggml" / "CMakeLists.txt").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--package", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--sha256", required=True)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--sdist", default=os.environ.get("AUTOGLM_GGML_SDIST"))
    args = ap.parse_args()

    cache = Path(args.cache) if args.cache else default_cache_root()
    target = cache / f"{args.package}-{args.version}-{args.sha256[:16]}"
    stamp = target / "STAMP"
    if stamp.is_file() and stamp.read_text().strip() == args.sha256 and (target / "ggml" / "CMakeLists.txt").is_file():
        print(target / "ggml")
        return

    with tempfile.TemporaryDirectory(prefix="autoglm-ggml-dl-") as dl:
        sdist = Path(args.sdist) if args.sdist else download_sdist(args.package, args.version, Path(dl))
        if not sdist.is_file():
            fail(f"sdist {sdist} does not exist")
        got = sha256_of(sdist)
        if got != args.sha256:
            fail(
                f"checksum mismatch for {sdist.name}: expected sha256 {args.sha256}, got {got}. "
                "The file is not the pinned release (corrupt download or a different index?). Remove it "
                "and retry, or build against your own tree with -DAUTOGLM_GGML_SOURCE_DIR=/path/to/ggml."
            )
        if target.exists():
            shutil.rmtree(target)
        extract_ggml(sdist, target)
    print(target / "ggml")


if __name__ == "__main__":
    main()
