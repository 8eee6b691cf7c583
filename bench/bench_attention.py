"""Our CPU attention kernels (native/src/cpu_attention.h) side by side on one micro-batch of a prompt:
the F32 kernel (AVX-512, else AVX2) against the BF16 one (AMX-BF16 tiles, else vdpbf16ps), in GFLOP/s
of q.k^T and p.v (the keys each query sees under the causal mask), packing of K and V included.

    python bench/bench_attention.py [--tokens 512] [--past 2688] [--heads 32] [--kv-heads 2] [--head-dim 128]
        [--full] [--threads 2] [--reps 5] [--kernels avx512,avx512_bf16] [--json OUT]

The defaults are the 9B decoder's heads and the last micro-batch of a 3,200-token agent prompt; `--full`
attends without a mask, as the vision tower does (e.g. --tokens 4096 --past 0 --heads 12 --kv-heads 12). The
kernels alternate, `--reps` times each (this VM's speed moves by minutes); medians are reported, and
each kernel's median ratio to the first one's, taken rep by rep.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from autoglm_gguf import _core


def causal_case(tokens: int, past: int, heads: int, kv_heads: int, head_dim: int, seed: int = 0, full: bool = False):
    rng = np.random.default_rng(seed)
    n_kv = past + tokens
    q = rng.standard_normal((tokens, heads, head_dim), dtype=np.float32)
    k = rng.standard_normal((n_kv, kv_heads, head_dim), dtype=np.float32)
    v = rng.standard_normal((n_kv, kv_heads, head_dim), dtype=np.float32)
    if full:
        return q, k, v, None
    mask = np.zeros((tokens, n_kv), np.float16)
    for i in range(tokens):
        mask[i, past + i + 1:] = -np.inf
    return q, k, v, mask.view(np.uint16)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=512, help="queries (the micro-batch)")
    ap.add_argument("--past", type=int, default=2688, help="cached keys before them")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--full", action="store_true", help="no mask: every query sees every key (the vision tower)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--kernels", default="avx512,avx512_bf16", help="comma-separated: avx2, avx512, avx512_bf16")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    kernels = a.kernels.split(",")
    q, k, v, mask = causal_case(a.tokens, a.past, a.heads, a.kv_heads, a.head_dim, full=a.full)
    n_kv = a.past + a.tokens
    pairs = a.tokens * n_kv if a.full else a.tokens * a.past + a.tokens * (a.tokens + 1) / 2  # (query, visible key)
    flops = 4.0 * a.head_dim * a.heads * pairs
    for kern in kernels:  # warm up (and refuse an unknown or unavailable kernel before timing)
        _core._attention(q, k, v, mask, kern, a.threads)
    rates: dict[str, list[float]] = {kern: [] for kern in kernels}
    for _ in range(a.reps):
        for kern in kernels:
            t0 = time.perf_counter()
            _core._attention(q, k, v, mask, kern, a.threads)
            rates[kern].append(flops / (time.perf_counter() - t0) / 1e9)
    print(f"attention: {a.tokens} queries after {a.past} cached keys{', no mask' if a.full else ''}, {a.heads} heads "
          f"({a.kv_heads} K/V), "
          f"head_dim {a.head_dim}, {a.threads} threads, our kernels on {_core._gemm_isa()}")
    out = {"args": vars(a), "isa": _core._gemm_isa(), "gflops": rates, "median_gflops": {}, "median_ratio": {}}
    for kern in kernels:
        med = statistics.median(rates[kern])
        ratio = statistics.median(x / y for x, y in zip(rates[kern], rates[kernels[0]]))
        out["median_gflops"][kern], out["median_ratio"][kern] = med, ratio
        print(f"  {kern:12s} {med:8.1f} GFLOP/s (median of {a.reps})  x{ratio:.2f} against {kernels[0]}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
