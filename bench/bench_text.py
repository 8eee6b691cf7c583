"""Text runtime side by side: prompt processing and generation tok/s, ours vs llama.cpp (llama-cpp-python
0.3.36), on the same GGUF with the same threads, context and batch, alternating A/B repetitions in one run.

    python bench/bench_text.py MODEL.gguf [--threads 2] [--prompt 512] [--gen 64] [--reps 3] [--json out.json]

Prompt tokens are random ids (the synthetic model's text is meaningless anyway); generation is greedy
and never stops early. llama.cpp's figures come from its own perf counters (llama_perf_context).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np


def ours_run(model, n_ctx, n_batch, prompt, n_gen, kv_type):
    from autoglm_gguf import _core

    s = _core.Session(model, n_ctx=n_ctx, n_batch=n_batch, kv_type=kv_type)
    g = _core.Generator(s, prompt, _core.SamplingParams(), max_tokens=n_gen, stop_at_eog=False)
    n = sum(1 for _ in g)
    t = g.timings
    assert t["generated_tokens"] == n_gen, (n, t)
    return t["prompt_tokens_per_s"], t["generation_tokens_per_s"]


def llamacpp_run(llm, prompt, n_gen):
    import llama_cpp

    n_vocab = llm.n_vocab()

    def last_logits():
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))

    llm.reset()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
    llama_cpp.llama_perf_context_reset(llm.ctx)
    llm.eval(prompt)
    tok = int(np.argmax(last_logits()))
    for _ in range(n_gen - 1):  # as ours: the last sampled token is not decoded
        llm.eval([tok])
        tok = int(np.argmax(last_logits()))
    p = llama_cpp.llama_perf_context(llm.ctx)
    return p.n_p_eval / (p.t_p_eval_ms / 1e3), p.n_eval / (p.t_eval_ms / 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--kv", default="f16")
    ap.add_argument("--json")
    args = ap.parse_args()

    import llama_cpp

    from autoglm_gguf import _core

    n_ctx = args.prompt + args.gen + 16
    rng = np.random.default_rng(0)
    prompt = rng.integers(10, 400, args.prompt).tolist()

    t0 = time.perf_counter()
    ours_model = _core.TextModel(args.model, n_threads=args.threads)
    ours_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(args.model, n_ctx=n_ctx, n_batch=args.batch, n_ubatch=args.batch, n_threads=args.threads,
                          n_threads_batch=args.threads, verbose=False, logits_all=False)
    lc_load = time.perf_counter() - t0

    rows = {"ours": [], "llama.cpp": []}
    for rep in range(args.reps):  # A/B alternation so drift on a shared machine hits both alike
        rows["ours"].append(ours_run(ours_model, n_ctx, args.batch, prompt, args.gen, args.kv))
        rows["llama.cpp"].append(llamacpp_run(llm, prompt, args.gen))
        print(f"rep {rep}: ours pp {rows['ours'][-1][0]:.2f} tg {rows['ours'][-1][1]:.3f} | llama.cpp pp "
              f"{rows['llama.cpp'][-1][0]:.2f} tg {rows['llama.cpp'][-1][1]:.3f} tok/s", flush=True)
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in rows.items()}
    res = {
        "model": args.model, "threads": args.threads, "prompt_tokens": args.prompt, "gen_tokens": args.gen,
        "batch": args.batch, "kv_type": args.kv, "reps": args.reps,
        "machine": {"cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
                    "cores": os.cpu_count(), "python": platform.python_version()},
        "load_s": {"ours": round(ours_load, 2), "llama.cpp": round(lc_load, 2)},
        "pp_tok_s": {k: round(v[0], 3) for k, v in med.items()},
        "tg_tok_s": {k: round(v[1], 3) for k, v in med.items()},
        "ratio_ours_over_llamacpp": {"pp": round(med["ours"][0] / med["llama.cpp"][0], 3),
                                     "tg": round(med["ours"][1] / med["llama.cpp"][1], 3)},
        "raw": rows,
    }
    print(json.dumps({k: res[k] for k in ("pp_tok_s", "tg_tok_s", "ratio_ours_over_llamacpp", "load_s")}, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    llm.close()


if __name__ == "__main__":
    main()
