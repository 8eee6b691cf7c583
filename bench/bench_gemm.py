"""The experimental Q4_0 prompt GEMM (native/src/gemm_q4_0.h) against ggml's, on one decoder layer's
weights, in GOP/s and as a share of this machine's int8 peak.

    python bench/bench_gemm.py MODEL-Q4_0.gguf [--tokens 512] [--threads 2] [--reps 3] [--json OUT]

ggml's rate is what AUTOGLM_PROFILE=1 reports for the `MUL_MAT q4_0 CPU_REPACK` family (its repacked
AVX2 kernel, the one llama.cpp uses) while a child process prefills `--tokens` tokens through the
model; so give a model with few layers (bench/make_synthetic.py --layers 1) for a quick run. Ours is
timed in this process on the same layer's matrices (q, k, v, output, the fused gate/up, down) with
the same number of rows and threads. The two alternate, `--reps` times each; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader

from autoglm_gguf import _core

CHILD = """
import sys, numpy as np
from autoglm_gguf import _core
m = _core.TextModel(sys.argv[1], n_threads=int(sys.argv[3]))
s = _core.Session(m, n_ctx=int(sys.argv[2]) + 8, n_batch=int(sys.argv[2]))
s.eval_tokens(np.random.default_rng(0).integers(10, 4000, int(sys.argv[2])).tolist(), "last")
"""


def ggml_rate(model: str, tokens: int, threads: int) -> float:
    proc = subprocess.run([sys.executable, "-c", CHILD, model, str(tokens), str(threads)], capture_output=True,
                          text=True, env=dict(os.environ, AUTOGLM_PROFILE="1"), check=True)
    line = next(ln for ln in proc.stderr.splitlines() if ln.strip().startswith("MUL_MAT q4_0") and "(vector)" not in ln)
    return float(re.search(r"([\d.]+) GOP/s", line).group(1))


def layer_matrices(model: str) -> list[np.ndarray]:
    r = GGUFReader(model)
    mats = [t for t in r.tensors if t.name.startswith("blk.0.") and t.name.endswith(".weight")
            and t.tensor_type == GGMLQuantizationType.Q4_0]
    if not mats:
        raise SystemExit(f"{model}: no Q4_0 matrices in layer 0")
    return [np.ascontiguousarray(t.data) for t in mats]


def our_rate(mats: list[np.ndarray], tokens: int, threads: int, rng) -> float:
    ops, secs = 0.0, 0.0
    for w in mats:
        k = w.shape[1] // 18 * 32
        a = rng.standard_normal((tokens, k)).astype(np.float32)
        t0 = time.perf_counter()
        _core._gemm_q4_0(w, a, threads)
        secs += time.perf_counter() - t0
        ops += 2.0 * tokens * k * w.shape[0]
    return ops / secs / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    if not _core._gemm_q4_0_available():
        raise SystemExit("this CPU has no AVX2/FMA/F16C: the kernel cannot run")
    mats = layer_matrices(a.model)
    rng = np.random.default_rng(0)
    our_rate(mats, 32, a.threads, rng)  # warm-up
    ours, theirs = [], []
    for rep in range(a.reps):
        for side in (("ours", "ggml") if rep % 2 == 0 else ("ggml", "ours")):
            if side == "ours":
                ours.append(our_rate(mats, a.tokens, a.threads, rng))
            else:
                theirs.append(ggml_rate(a.model, a.tokens, a.threads))
            print(f"[rep {rep}] {side}: {(ours if side == 'ours' else theirs)[-1]:.1f} GOP/s", file=sys.stderr)
    peak = _core.cpu_peak(a.threads)
    res = {"tokens": a.tokens, "threads": a.threads, "cpu_variant": _core.cpu_variant(), "clock_ghz": peak["clock_ghz"],
           "int8_peak_gops": peak["int8_gops"], "ours_gops": ours, "ggml_gops": theirs,
           "ours_median": statistics.median(ours), "ggml_median": statistics.median(theirs)}
    res["ratio"] = res["ours_median"] / res["ggml_median"]
    print(f"| kernel | GOP/s (median of {a.reps}) | share of the int8 peak ({peak['int8_gops']:.0f}) |")
    print("|---|---|---|")
    for name, v in (("ggml, repacked Q4_0 (MUL_MAT q4_0 CPU_REPACK)", res["ggml_median"]),
                    ("ours, gemm_q4_0", res["ours_median"])):
        print(f"| {name} | {v:.1f} | {100 * v / peak['int8_gops']:.0f}% |")
    print(f"ratio ours / ggml: {res['ratio']:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
