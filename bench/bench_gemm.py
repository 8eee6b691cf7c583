"""Our prompt GEMMs (native/src/gemm.h: Q4_0, Q4_K, Q5_0, Q8_0) against ggml's kernels on one decoder layer's
weights, in GOP/s and as a share of this machine's int8 peak.

    python bench/bench_gemm.py MODEL.gguf [--tokens 512] [--threads 2] [--reps 3] [--json OUT]

ggml's rate per weight type is what AUTOGLM_PROFILE=1 reports for its `MUL_MAT <type>` family (the
kernels llama.cpp uses: repacked for Q4_0/Q4_K, llamafile's tinyBLAS for Q5_0/Q8_0) while a child process prefills `--tokens`
tokens through the model with AUTOGLM_GEMM=ggml; so give a model with few layers
(bench/make_synthetic.py --layers 1, then `autoglm-gguf quantize` for the K-quant mixes) for a quick
run. Ours is timed in this process on the same layer's matrices of each type with the same number of
rows and threads. The two alternate, `--reps` times each; medians are reported.
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
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader

from autoglm_gguf import _core

CHILD = """
import sys, numpy as np
from autoglm_gguf import _core
m = _core.TextModel(sys.argv[1], n_threads=int(sys.argv[3]))
s = _core.Session(m, n_ctx=int(sys.argv[2]) + 8, n_batch=int(sys.argv[2]))
s.eval_tokens(np.random.default_rng(0).integers(10, 4000, int(sys.argv[2])).tolist(), "last")
"""

#: the weight types we have a GEMM for: our name -> (GGUF type, ggml's name in the profile)
KERNELS = {"q4_0": (GGMLQuantizationType.Q4_0, "q4_0"), "q4_k": (GGMLQuantizationType.Q4_K, "q4_K"),
           "q5_0": (GGMLQuantizationType.Q5_0, "q5_0"), "q5_k": (GGMLQuantizationType.Q5_K, "q5_K"),
           "q6_k": (GGMLQuantizationType.Q6_K, "q6_K"), "q8_0": (GGMLQuantizationType.Q8_0, "q8_0")}


def ggml_rates(model: str, tokens: int, threads: int) -> dict[str, float]:
    """GOP/s of ggml's prompt matmul per weight type, from the profile of a prefill with AUTOGLM_GEMM=ggml."""
    proc = subprocess.run([sys.executable, "-c", CHILD, model, str(tokens), str(threads)], capture_output=True,
                          text=True, env=dict(os.environ, AUTOGLM_PROFILE="1", AUTOGLM_GEMM="ggml"), check=True)
    rates = {}
    for name, (_, profile_name) in KERNELS.items():
        for ln in proc.stderr.splitlines():
            if ln.strip().startswith(f"MUL_MAT {profile_name} ") and "(vector)" not in ln:
                rates[name] = float(re.search(r"([\d.]+) GOP/s", ln).group(1))
    return rates


def layer_matrices(model: str) -> dict[str, list[np.ndarray]]:
    """Layer 0's weight matrices of each type we have a kernel for."""
    r = GGUFReader(model)
    out: dict[str, list[np.ndarray]] = {}
    for name, (qtype, _) in KERNELS.items():
        mats = [np.ascontiguousarray(t.data) for t in r.tensors
                if t.name.startswith("blk.0.") and t.name.endswith(".weight") and t.tensor_type == qtype]
        if mats:
            out[name] = mats
    if not out:
        raise SystemExit(f"{model}: layer 0 has no {'/'.join(KERNELS)} matrices")
    return out


def our_rate(kind: str, mats: list[np.ndarray], tokens: int, threads: int, rng, isa: str = "") -> float:
    qtype = KERNELS[kind][0]
    block, size = GGML_QUANT_SIZES[qtype]
    ops, secs = 0.0, 0.0
    for w in mats:
        k = w.shape[1] // size * block
        a = rng.standard_normal((tokens, k)).astype(np.float32)
        t0 = time.perf_counter()
        _core._gemm(w, a, kind, threads, isa)
        secs += time.perf_counter() - t0
        ops += 2.0 * tokens * k * w.shape[0]
    return ops / secs / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--isa", default="", help="our kernels' instruction set (default: the best, as the graph uses): "
                    "one of _core._gemm_isas()")
    ap.add_argument("--json")
    a = ap.parse_args()
    isa = a.isa or _core._gemm_isa()
    if not _core._gemm_available():
        raise SystemExit("this CPU has no AVX2/FMA/F16C: the kernel cannot run")
    mats = layer_matrices(a.model)
    rng = np.random.default_rng(0)
    for kind, ms in mats.items():
        our_rate(kind, ms, 32, a.threads, rng, isa)  # warm-up
    ours: dict[str, list[float]] = {kind: [] for kind in mats}
    theirs: dict[str, list[float]] = {kind: [] for kind in mats}
    for rep in range(a.reps):
        for side in (("ours", "ggml") if rep % 2 == 0 else ("ggml", "ours")):
            if side == "ours":
                for kind, ms in mats.items():
                    ours[kind].append(our_rate(kind, ms, a.tokens, a.threads, rng, isa))
            else:
                rates = ggml_rates(a.model, a.tokens, a.threads)
                for kind in mats:
                    theirs[kind].append(rates[kind])
            got = {k: round((ours if side == "ours" else theirs)[k][-1], 1) for k in mats}
            print(f"[rep {rep}] {side}: {got} GOP/s", file=sys.stderr)
    peak = _core.cpu_peak(a.threads)
    res = {"tokens": a.tokens, "threads": a.threads, "cpu_variant": _core.cpu_variant(), "gemm_isa": isa,
           "clock_ghz": peak["clock_ghz"], "int8_peak_gops": peak["int8_gops"], "types": {}}
    print(f"ggml's CPU variant {_core.cpu_variant()}, our kernels {isa}, clock {peak['clock_ghz']:.2f} GHz, "
          f"int8 peak {peak['int8_gops']:.0f} GOP/s ({peak['int8_isa']})")
    print(f"| weights | ggml (GOP/s, median of {a.reps}) | ours | ratio | shares of the int8 peak ({peak['int8_gops']:.0f}) |")
    print("|---|---|---|---|---|")
    for kind in mats:
        o, t = statistics.median(ours[kind]), statistics.median(theirs[kind])
        res["types"][kind] = {"ours_gops": ours[kind], "ggml_gops": theirs[kind], "ours_median": o, "ggml_median": t,
                              "ratio": o / t}
        print(f"| {kind} | {t:.1f} | {o:.1f} | **{o / t:.2f}** | {100 * t / peak['int8_gops']:.0f}% → "
              f"{100 * o / peak['int8_gops']:.0f}% |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
