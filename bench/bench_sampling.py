"""The native sampler's cost per `sample()` call at GLM-4's vocabulary size (151,552 ids).

    python bench/bench_sampling.py [--vocab 151552] [--history 512] [--reps 30]

Each configuration (greedy, plain temperature, top-k, top-p, min-p, and llama.cpp's usual chain with a
repetition penalty) samples two logit vectors: "peaked" (model-like: a few strong candidates over a wide
low tail) and "flat" (unit normal noise, the worst case for top-p). One call warms up, then the median of
--reps timed calls is printed. Tests check what the sampler picks (tests/test_sampling.py); this is
only its speed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from autoglm_gguf import _core

CONFIGS = [
    ("greedy (defaults)", {}),
    ("temp=1, no truncation", {"temperature": 1.0}),
    ("top_k=40", {"temperature": 1.0, "top_k": 40}),
    ("top_p=0.95 (top_k=0)", {"temperature": 1.0, "top_p": 0.95}),
    ("min_p=0.05", {"temperature": 1.0, "min_p": 0.05}),
    ("llama.cpp-like k40 p.95 m.05 T.8 +rep1.1",
     {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1}),
]


def logits(n_vocab: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    peaked = (rng.standard_normal(n_vocab) * 2.0).astype(np.float32)
    peaked[rng.choice(n_vocab, 20, replace=False)] += 14.0
    flat = rng.standard_normal(n_vocab).astype(np.float32)
    return {"peaked": peaked, "flat": flat}


def median_ms(sampler: _core.Sampler, x: np.ndarray, history: list[int], reps: int) -> float:
    sampler.sample(x, history)  # warm-up, untimed
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sampler.sample(x, history)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=151552, help="logits per call (default: GLM-4's 151552)")
    ap.add_argument("--history", type=int, default=512, help="previous tokens the penalties look at")
    ap.add_argument("--reps", type=int, default=30, help="timed calls per row; the median is printed")
    args = ap.parse_args()
    if args.vocab < 20 or args.history < 0 or args.reps < 1:
        ap.error("--vocab must be >= 20 (20 strong candidates), --history >= 0, --reps >= 1")

    rng = np.random.default_rng(0)
    xs = logits(args.vocab, rng)
    history = rng.integers(0, args.vocab, args.history).tolist()
    print(f"sample() per call (median of {args.reps}), n_vocab={args.vocab}, history={args.history}:")
    for label, cfg in CONFIGS:
        for dist, x in xs.items():
            ms = median_ms(_core.Sampler(_core.SamplingParams(seed=1, **cfg)), x, history, args.reps)
            print(f"  {label:42s} {dist:6s} {ms:7.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
