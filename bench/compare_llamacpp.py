"""Our runtime and llama.cpp (llama-cpp-python 0.3.36) side by side on the same GGUF files.

    python bench/compare_llamacpp.py --model TEXT.gguf --mmproj MMPROJ.gguf [--threads 2] [--reps 3]
        [--heavy-reps 1] [--figures tg0,pp512,agent,image,pp4k,bandwidth] [--checkpoint HF_DIR
        --convert-out DIR] [--json bench/results/compare.json]

Figures run in the order given; the JSON is rewritten after each, so a long run can be read as it goes.

Every figure runs each runtime in its own process (bench_worker.py), with the same threads, context,
batch, KV type and inputs, alternating which runtime goes first from one repetition to the next, so
drift on a shared machine hits both alike. Reported: medians, the ratio ours/llama.cpp (oriented so
that > 1 means ours is better: speed ratios are ours/theirs, time and memory ratios theirs/ours),
each process's peak RSS, and machine info.

Figures:
  tg0        generation tok/s right after a 16-token prompt (context ~0)
  pp512      prompt processing tok/s, 512 tokens
  pp4k       prompt processing tok/s, 4096 tokens, then generation tok/s at context 4k (tg4k)
  image      vision tower + merger seconds for one already-resized screenshot (--image-size, default
             1036x2352: a 1080x2400 screenshot at max_pixels 5,000,000, 3,108 image tokens)
  agent      Open-AutoGLM's step: ~1,500-token system prompt + screenshot + instruction -> first token,
             then step 2 of the same session (history as text, new screenshot) -> first token
  bandwidth  decode speed as a fraction of this machine's memory-copy bandwidth
  convert    (with --checkpoint) HF -> Q4_0 + F16 mmproj, ours vs llama.cpp's convert + quantize
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from _proc import machine_info, timed

HERE = Path(__file__).resolve().parent
RUNTIMES = ("ours", "llamacpp")


def worker(runtime: str, figure: str, a, **extra) -> dict:
    cmd = [sys.executable, str(HERE / "bench_worker.py"), runtime, figure, "--model", a.model, "--threads",
           str(a.threads), "--batch", str(a.batch), "--kv", a.kv, "--gpu-layers", str(a.gpu_layers)]
    if a.mmproj:
        cmd += ["--mmproj", a.mmproj, "--vision-type", a.vision_type]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    return timed(cmd)


def run_figure(name: str, a, figure: str, heavy: bool = False, **extra) -> dict[str, list[dict]]:
    """Repetitions of one figure (a.reps, or a.heavy_reps), A/B then B/A, each runtime in a fresh process."""
    rows: dict[str, list[dict]] = {r: [] for r in RUNTIMES}
    for rep in range(a.heavy_reps if heavy else a.reps):
        order = RUNTIMES if rep % 2 == 0 else RUNTIMES[::-1]
        for rt in order:
            rows[rt].append(worker(rt, figure, a, **extra))
            print(f"[{name} rep {rep}] {rt}: {json.dumps(rows[rt][-1])}", file=sys.stderr, flush=True)
    return rows


def med(rows: list[dict], path: str) -> float:
    vals = []
    for r in rows:
        for k in path.split("."):
            r = r[k]
        vals.append(float(r))
    return statistics.median(vals)


def figure(rows, path, unit, better):
    """One table row: both medians and the ratio oriented so that > 1 means ours is better."""
    ours, theirs = med(rows["ours"], path), med(rows["llamacpp"], path)
    ratio = ours / theirs if better == "higher" else theirs / ours
    return {"ours": round(ours, 4), "llamacpp": round(theirs, 4), "unit": unit, "better": better,
            "ratio": round(ratio, 3)}


def copy_bandwidth(threads: int, mib: int = 512, reps: int = 5) -> float:
    """Memory-copy bandwidth in GB/s (bytes read + bytes written, STREAM's convention) with `threads`."""
    n = mib * 2**20 // 8
    src = [np.ones(n) for _ in range(threads)]
    dst = [np.empty(n) for _ in range(threads)]
    best = 0.0
    for _ in range(reps):
        ts = [threading.Thread(target=np.copyto, args=(d, s)) for d, s in zip(dst, src)]  # copyto drops the GIL
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        best = max(best, 2 * 8 * n * threads / (time.perf_counter() - t0) / 1e9)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--mmproj")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--kv", default="f16")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--heavy-reps", type=int, default=1, help="repetitions of pp4k, image and agent (minutes each)")
    ap.add_argument("--figures", default="tg0,pp512,agent,image,pp4k,bandwidth")
    ap.add_argument("--gen", type=int, default=64, help="tokens generated for tg0")
    ap.add_argument("--image-size", default="1036x2352")
    ap.add_argument("--image-text-model", help="image figure: the text GGUF llama.cpp loads beside the mmproj "
                                               "(default --model; a 1-layer model of the same width keeps its RSS "
                                               "the tower's alone)")
    ap.add_argument("--system-tokens", type=int, default=1500)
    ap.add_argument("--vision-type", default="auto", help="image, agent: our tower's matrices' type (file, auto, "
                                                             "f32, f16, bf16); llama.cpp's are as stored")
    ap.add_argument("--checkpoint", type=Path, help="HF checkpoint for the convert figure")
    ap.add_argument("--convert-out", type=Path, default=Path("bench-convert-out"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", type=Path, help="a previous result of the same setup whose other figures to keep")
    a = ap.parse_args()
    figs = [f.strip() for f in a.figures.split(",") if f.strip()]

    res: dict = {"model": a.model, "mmproj": a.mmproj, "vision_type": a.vision_type, "threads": a.threads, "batch": a.batch, "kv_type": a.kv,
                 "gpu_layers": a.gpu_layers, "reps": a.reps, "machine": machine_info(), "figures": {}, "raw": {}}
    if a.keep:  # resume: the figures measured before stay, the ones asked for now are (re)measured
        old = json.loads(a.keep.read_text())
        if (old["model"], old["threads"]) != (a.model, a.threads):
            sys.exit(f"--keep {a.keep}: measured on {old['model']} with {old['threads']} threads, not this setup")
        res["figures"], res["raw"] = old["figures"], old["raw"]
        if "bandwidth" in old:
            res["bandwidth"] = old["bandwidth"]
        res["machine_earlier"] = old.get("machine")
    F, raw = res["figures"], res["raw"]

    def save():
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(res, indent=1) + "\n")

    def tg0():
        raw["tg0"] = run_figure("tg0", a, "text", prompt=16, gen=a.gen)
        F["generation, context 0"] = figure(raw["tg0"], "tg_tok_s", "tok/s", "higher")

    def pp512():
        raw["pp512"] = run_figure("pp512", a, "text", prompt=512, gen=2)
        F["prompt processing, 512"] = figure(raw["pp512"], "pp_tok_s", "tok/s", "higher")

    def pp4k():
        raw["pp4k"] = run_figure("pp4k", a, "text", heavy=True, prompt=4096, gen=32)
        F["prompt processing, 4096"] = figure(raw["pp4k"], "pp_tok_s", "tok/s", "higher")
        F["generation, context 4k"] = figure(raw["pp4k"], "tg_tok_s", "tok/s", "higher")

    def image():
        # llama.cpp's mtmd needs a text model loaded beside the tower; --image-text-model gives it a
        # small one of the same width so its peak RSS is the tower's, like ours (which loads none).
        model = a.model
        a.model = a.image_text_model or a.model
        try:
            raw["image"] = run_figure("image", a, "image", heavy=True, image_size=a.image_size)
        finally:
            a.model = model
        F["image encode"] = figure(raw["image"], "encode_s", "s", "lower")
        F["image encode"]["image_tokens"] = raw["image"]["ours"][0]["image_tokens"]
        F["image encode, peak RSS"] = figure(raw["image"], "peak_rss_mib", "MiB", "lower")
        F["image encode, peak RSS"]["llamacpp_text_model"] = a.image_text_model or a.model

    def agent():
        raw["agent"] = run_figure("agent", a, "agent", heavy=True, image_size=a.image_size,
                                  system_tokens=a.system_tokens, ctx=8192)
        F["agent step 1, first token"] = figure(raw["agent"], "step1.ttft_s", "s", "lower")
        F["agent step 2, first token"] = figure(raw["agent"], "step2.ttft_s", "s", "lower")
        step2 = raw["agent"]["ours"][0]["step2"]
        F["agent step 2, first token"].update(prompt_tokens=step2["prompt_tokens"], reused_tokens=step2["reused_tokens"])
        F["agent session, peak RSS"] = figure(raw["agent"], "peak_rss_mib", "MiB", "lower")

    def bandwidth():
        from autoglm_gguf import _core
        from autoglm_gguf.op_count import decode_weight_bytes

        bw = copy_bandwidth(a.threads)
        read_bw = _core.read_bandwidth(a.threads)  # reads only, as a GEMV: the ceiling decode can reach
        per_tok = decode_weight_bytes(a.model)
        src = raw.get("tg0") or run_figure("tg0", a, "text", prompt=16, gen=a.gen)
        res["bandwidth"] = {"copy_gb_s": round(bw, 2), "read_bw_gb_s": round(read_bw, 2), "weight_bytes_per_token": per_tok}
        for rt in RUNTIMES:
            tok_s = med(src[rt], "tg_tok_s")
            res["bandwidth"][rt] = {"tg_tok_s": round(tok_s, 3), "read_gb_s": round(per_tok * tok_s / 1e9, 2),
                                    "fraction_of_copy_bw": round(per_tok * tok_s / 1e9 / bw, 3),
                                    "fraction_of_read_bw": round(per_tok * tok_s / 1e9 / read_bw, 3)}

    def convert():
        from bench_convert import compare_convert

        conv = compare_convert(a.checkpoint, a.convert_out, a.threads)
        raw["convert"] = conv
        lc_wall = conv["llamacpp_convert_f16"]["wall_s"] + conv["llamacpp_quantize_q4_0"]["wall_s"]
        lc_rss = max(conv["llamacpp_convert_f16"]["peak_rss_mib"], conv["llamacpp_quantize_q4_0"]["peak_rss_mib"])
        F["convert HF -> Q4_0 + mmproj"] = {"ours": conv["ours"]["wall_s"], "llamacpp": lc_wall, "unit": "s",
                                            "better": "lower", "ratio": conv["ratio_speed_llamacpp_over_ours"]}
        F["convert, peak RSS"] = {"ours": conv["ours"]["peak_rss_mib"], "llamacpp": lc_rss, "unit": "MiB",
                                  "better": "lower", "ratio": conv["ratio_rss_llamacpp_over_ours"]}

    runners = {"tg0": tg0, "pp512": pp512, "pp4k": pp4k, "image": image, "agent": agent, "bandwidth": bandwidth,
               "convert": convert}
    for name in figs:  # in the order given
        if name not in runners:
            sys.exit(f"unknown figure {name!r}; choose from {', '.join(runners)}")
        if name in ("image", "agent") and not a.mmproj:
            sys.exit(f"figure {name} needs --mmproj")
        if name == "convert" and not a.checkpoint:
            sys.exit("figure convert needs --checkpoint")
        runners[name]()
        save()

    print(table(res))
    save()


def table(res: dict) -> str:
    rows = ["| figure | ours | llama.cpp | ratio (>1: ours better) |", "|---|---|---|---|"]
    for name, f in res["figures"].items():
        rows.append(f"| {name} | {f['ours']:g} {f['unit']} | {f['llamacpp']:g} {f['unit']} | **{f['ratio']:.3f}** |")
    if "bandwidth" in res:
        b = res["bandwidth"]
        rows.append(f"| decode, share of copy bandwidth ({b['copy_gb_s']} GB/s) | {b['ours']['fraction_of_copy_bw']:.0%} "
                    f"| {b['llamacpp']['fraction_of_copy_bw']:.0%} | |")
        if "read_bw_gb_s" in b:
            rows.append(f"| decode, share of read bandwidth ({b['read_bw_gb_s']} GB/s) "
                        f"| {b['ours']['fraction_of_read_bw']:.0%} | {b['llamacpp']['fraction_of_read_bw']:.0%} | |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
