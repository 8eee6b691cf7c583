"""Shared by the bench scripts: run one measured child process, and describe the machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def drop_caches() -> bool:
    """Drop the page cache (root only) so a run reads its inputs cold; False when not permitted."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(cmd: list[str], *, env: dict | None = None) -> dict:
    """Run `cmd`; its wall time, its own peak RSS (os.wait4) and the JSON object on its last stdout line."""
    with tempfile.TemporaryFile() as outf, tempfile.TemporaryFile() as errf:  # files: a chatty child never blocks
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=outf, stderr=errf, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        outf.seek(0)
        errf.seek(0)
        out = outf.read().decode(errors="replace")
        err = errf.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{err[-3000:]}\n{out[-2000:]}")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    res = json.loads(lines[-1]) if lines else {}
    res.update(wall_s=round(wall, 3), peak_rss_mib=round(usage.ru_maxrss / 1024))
    return res


def machine_info() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    field = lambda name: next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith(name)), "?")
    flags = set(field("flags").split())
    mem = next((int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")), 0) if Path("/proc/meminfo").exists() else 0
    try:
        from autoglm_gguf import _core

        ggml = {"version": _core.ggml_version(), "backends": _core.backends(), "cpu_variant": _core.cpu_variant(),
                "cpu_features": _core.cpu_features(), "peak_2_threads": _core.cpu_peak(2)}
    except ImportError:
        ggml = {}
    try:
        from importlib.metadata import version

        lcpp = version("llama_cpp_python")
    except Exception:
        lcpp = None
    return {
        "cpu": field("model name"), "cores": os.cpu_count(), "mem_gib": round(mem / 2**20, 1),
        "simd": sorted(f for f in flags if f.startswith(("avx", "fma", "f16c", "amx")) or f in ("vnni",)),
        "python": platform.python_version(), "os": platform.platform(), "ggml": ggml, "llama_cpp_python": lcpp,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
