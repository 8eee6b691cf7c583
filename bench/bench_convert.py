"""Converter side by side: our `autoglm-gguf convert` (HF -> Q4_0 text + F16 mmproj in one pass) against
llama.cpp's route to the same files (its convert_hf_to_gguf.py to F16, then its quantizer to Q4_0, via
llama-cpp-python 0.3.36's llama_model_quantize), both from the pinned sdist. Each step runs as its own
process; wall time and that process's peak RSS (os.wait4) are reported, and the page cache is dropped
before each step when permitted so neither side reads a warm checkpoint.

    python bench/bench_convert.py CKPT_DIR OUT_DIR [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(cmd: list[str]) -> dict:
    cold = drop_caches()
    with tempfile.TemporaryFile() as errf:  # a file, not a pipe: a chatty child must never block on it
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        errf.seek(0)
        err = errf.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{err[-3000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024), "cold_cache": cold}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    conv = subprocess.run([sys.executable, str(REPO / "cmake" / "fetch_ggml.py"), "--tree", "converter"],
                          check=True, capture_output=True, text=True).stdout.strip()

    res: dict = {"checkpoint": str(args.ckpt), "threads": args.threads, "machine": {
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
        "cores": os.cpu_count(), "python": platform.python_version()}}

    res["ours"] = timed(["autoglm-gguf", "convert", str(args.ckpt), "-q", "--force", "-t", str(args.threads),
                         "-o", str(args.out / "ours-Q4_0.gguf"), "--mmproj-out", str(args.out / "ours-mmproj-F16.gguf")])

    jobs = [[str(args.ckpt), "--outtype", "f16", "--outfile", str(args.out / "lcpp-F16.gguf")],
            [str(args.ckpt), "--mmproj", "--outtype", "f16", "--outfile", str(args.out / "lcpp-mmproj-F16.gguf")]]
    res["llamacpp_convert_f16"] = timed([sys.executable, str(REPO / "tests" / "_llamacpp_convert.py"), conv,
                                        json.dumps(jobs)])
    quant = (f"import ctypes, llama_cpp as l; p = l.llama_model_quantize_default_params(); "
             f"p.ftype = l.LLAMA_FTYPE_MOSTLY_Q4_0; p.nthread = {args.threads}; "
             f"rc = l.llama_model_quantize({str(args.out / 'lcpp-F16.gguf')!r}.encode(), "
             f"{str(args.out / 'lcpp-Q4_0.gguf')!r}.encode(), ctypes.byref(p)); raise SystemExit(rc)")
    res["llamacpp_quantize_q4_0"] = timed([sys.executable, "-c", quant])
    lc_wall = res["llamacpp_convert_f16"]["wall_s"] + res["llamacpp_quantize_q4_0"]["wall_s"]
    lc_rss = max(res["llamacpp_convert_f16"]["peak_rss_mib"], res["llamacpp_quantize_q4_0"]["peak_rss_mib"])
    res["ratio_speed_llamacpp_over_ours"] = round(lc_wall / res["ours"]["wall_s"], 2)
    res["ratio_rss_llamacpp_over_ours"] = round(lc_rss / res["ours"]["peak_rss_mib"], 2)
    res["sizes_bytes"] = {p.name: p.stat().st_size for p in sorted(args.out.glob("*.gguf"))}
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
