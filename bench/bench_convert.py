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
import subprocess
import sys
from pathlib import Path

from _proc import drop_caches, machine_info, timed

REPO = Path(__file__).resolve().parents[1]


def cold(cmd: list[str]) -> dict:
    """One converter step as its own process, after dropping the page cache where permitted."""
    was_dropped = drop_caches()
    return {**timed(cmd), "cold_cache": was_dropped}


def compare_convert(ckpt: Path, out: Path, threads: int) -> dict:
    """Both converter routes on `ckpt`, files written under `out`; wall times, peak RSS and ratios."""
    out.mkdir(parents=True, exist_ok=True)
    conv = subprocess.run([sys.executable, str(REPO / "cmake" / "fetch_ggml.py"), "--tree", "converter"],
                          check=True, capture_output=True, text=True).stdout.strip()
    res: dict = {"checkpoint": str(ckpt), "threads": threads}
    res["ours"] = cold(["autoglm-gguf", "convert", str(ckpt), "-q", "--force", "-t", str(threads),
                        "-o", str(out / "ours-Q4_0.gguf"), "--mmproj-out", str(out / "ours-mmproj-F16.gguf")])
    jobs = [[str(ckpt), "--outtype", "f16", "--outfile", str(out / "lcpp-F16.gguf")],
            [str(ckpt), "--mmproj", "--outtype", "f16", "--outfile", str(out / "lcpp-mmproj-F16.gguf")]]
    res["llamacpp_convert_f16"] = cold([sys.executable, str(REPO / "tests" / "_llamacpp_convert.py"), conv,
                                        json.dumps(jobs)])
    quant = (f"import ctypes, llama_cpp as l; p = l.llama_model_quantize_default_params(); "
             f"p.ftype = l.LLAMA_FTYPE_MOSTLY_Q4_0; p.nthread = {threads}; "
             f"rc = l.llama_model_quantize({str(out / 'lcpp-F16.gguf')!r}.encode(), "
             f"{str(out / 'lcpp-Q4_0.gguf')!r}.encode(), ctypes.byref(p)); raise SystemExit(rc)")
    res["llamacpp_quantize_q4_0"] = cold([sys.executable, "-c", quant])
    lc_wall = res["llamacpp_convert_f16"]["wall_s"] + res["llamacpp_quantize_q4_0"]["wall_s"]
    lc_rss = max(res["llamacpp_convert_f16"]["peak_rss_mib"], res["llamacpp_quantize_q4_0"]["peak_rss_mib"])
    res["ratio_speed_llamacpp_over_ours"] = round(lc_wall / res["ours"]["wall_s"], 2)
    res["ratio_rss_llamacpp_over_ours"] = round(lc_rss / res["ours"]["peak_rss_mib"], 2)
    res["sizes_bytes"] = {p.name: p.stat().st_size for p in sorted(out.glob("*.gguf"))}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    res = {**compare_convert(args.ckpt, args.out, args.threads), "machine": machine_info()}
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
