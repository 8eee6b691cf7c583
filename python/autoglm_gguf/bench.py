"""`autoglm-gguf bench`: llama-bench-like figures for one model, plus the agent-step workload.

The agent-step helpers (system prompt, chat layout, random screenshots) are shared with
bench/compare_llamacpp.py so that both measure the same workload.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from . import _core
from .errors import AutoGLMError, ImageError
from .timing import time_first_token, time_generation, time_image_encode

# An Open-AutoGLM-like system prompt, repeated up to the requested length (only its length matters).
SYSTEM_SEED = ("You are a phone-use agent. Each step you see the current screenshot and the task, think about "
               "the next action and answer with do(action=...) on a 0-999 grid. Actions: Launch, Tap, Type, "
               "Swipe, Back, Home, Long Press, Double Tap, Wait, Take_over, finish(message=...). Rules: check the "
               "current app before acting; if a page has not loaded, Wait; never invent coordinates. ")
INSTRUCTIONS = ("Open the settings app and turn on Wi-Fi.", "Now open the network list and choose HomeNet.")
# The answer kept in the history: fixed, so every runtime sees the same step-2 prompt whatever random
# weights generate.
ANSWER = ('<think>The settings app is on the home screen, second row. I will tap it.</think>'
          '<answer>do(action="Tap", element=[500,320])</answer>')
IMAGE_SLOT = "<|begin_of_image|><|image|><|end_of_image|>"


def random_image(width: int, height: int, seed: int) -> np.ndarray:
    """A blocky random RGB picture (pixel values do not change the work, but keep it image-like)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 28 + 1, width // 28 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(small, 28, 0), 28, 1)[:height, :width])


def system_prompt(tokenize, n_tokens: int) -> str:
    """The shortest run of whole words of SYSTEM_SEED (repeated) that is at least n_tokens long."""
    text = SYSTEM_SEED
    while len(tokenize(text)) < n_tokens:
        text += SYSTEM_SEED
    words = text.split(" ")
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenize(" ".join(words[:mid]))) >= n_tokens:
            hi = mid
        else:
            lo = mid + 1
    return " ".join(words[:lo])


def agent_prompt(system: str, step: int, image_marker: str = IMAGE_SLOT) -> str:
    """Step `step` (0-based) of an Open-AutoGLM session in GLM-4.1V's chat layout: earlier turns keep
    their text and the fixed ANSWER, only the current turn has a screenshot (Open-AutoGLM drops old ones)."""
    out = f"[gMASK]<sop><|system|>\n{system}"
    for i in range(step):
        out += f"<|user|>\n{INSTRUCTIONS[i % len(INSTRUCTIONS)]}<|assistant|>\n{ANSWER}"
    return out + f"<|user|>\n{image_marker}{INSTRUCTIONS[step % len(INSTRUCTIONS)]}<|assistant|>\n"


def parse_size(spec: str) -> tuple[int, int] | None:
    """'WxH' -> (width, height); None when spec is not of that form."""
    parts = spec.lower().split("x")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def parse_image_arg(spec: str) -> np.ndarray:
    """--image: WxH (a random screenshot of that size) or a path to an image file."""
    size = parse_size(spec)
    if size:
        w, h = size
        if w < 1 or h < 1:
            raise ImageError(f"--image {spec}: width and height must be positive")
        return random_image(w, h, 0)
    from .images import load_image

    return load_image(spec)


def _stats(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def run_bench(args: argparse.Namespace) -> list[dict]:
    from .model import AutoGLM

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    llm = AutoGLM(args.model, mmproj_path=args.mmproj, n_ctx=args.ctx, n_batch=args.batch, n_threads=args.threads,
                  n_gpu_layers=args.gpu_layers, progress=False, vision_matmul_type=args.vision_type)
    load_s = time.perf_counter() - t0
    ids = lambda n: rng.integers(10, min(llm.n_vocab, 4000), n).tolist()  # ordinary token ids, no specials
    common = {"model": Path(args.model).name, "threads": args.threads or "auto", "n_gpu_layers": args.gpu_layers,
              "batch": args.batch, "ggml": _core.ggml_version(), "load_s": round(load_s, 3)}
    results = []

    def record(test: str, unit: str, values: list[float], **extra):
        mean, std = _stats(values)
        results.append({**common, "test": test, "unit": unit, "mean": round(mean, 4), "stddev": round(std, 4),
                        "reps": len(values), **extra})

    from . import op_count

    n_threads = args.threads or _core.default_thread_count()
    peak = _core.cpu_peak(n_threads)
    common.update(cpu_variant=_core.cpu_variant(), clock_ghz=round(peak["clock_ghz"], 2))

    def arithmetic(work: op_count.Work, seconds: float, rows: int = 0) -> dict:
        """GOP/s and share of this machine's peak for that family (meaningful on the CPU only). Quantized
        weights whose micro-batches of `rows` run on AMX tiles are measured against the tiles' peak."""
        if work.family == "int8" and rows and work.dtype and args.gpu_layers == 0:
            try:
                tiles = _core._gemm_tiles(work.dtype, rows)
            except ValueError:  # a type our kernels do not name
                tiles = ""
            if tiles:
                work = dataclasses.replace(work, family=f"amx_{tiles}")
        gops, share = op_count.share_of_peak(work, seconds, peak)
        out = {"gops": round(gops, 1), "peak_family": work.family}
        if args.gpu_layers == 0:
            out.update(peak_gops=round(peak[f"{work.family}_gops"], 1), share_of_peak=round(share, 3))
        return out

    time_generation(llm, ids(8), 2)  # warm-up (first-touch of weights, thread pool, allocator), not measured
    if args.n_prompt > 0:
        vals = [time_generation(llm, ids(args.n_prompt), 1).prompt_tokens_per_s for _ in range(args.reps)]
        work = op_count.text_prefill(args.model, args.n_prompt)
        record(f"pp{args.n_prompt}", "tok/s", vals,
               **arithmetic(work, args.n_prompt / statistics.fmean(vals), min(args.n_prompt, args.batch)))
    if args.n_gen > 0:
        vals = [time_generation(llm, ids(1), args.n_gen).generation_tokens_per_s for _ in range(args.reps)]
        extra = {}
        if args.gpu_layers == 0:
            # decode reads every weight once per token: against what these cores can read (measured now)
            weight_gb_s = op_count.decode_weight_bytes(args.model) * statistics.fmean(vals) / 1e9
            read_bw = _core.read_bandwidth(n_threads)
            extra = {"weight_gb_s": round(weight_gb_s, 2), "read_bw_gb_s": round(read_bw, 2),
                     "share_of_read_bw": round(weight_gb_s / read_bw, 3)}
        record(f"tg{args.n_gen}", "tok/s", vals, **extra)
    if args.image:
        vis = llm.vision
        if vis is None:
            raise AutoGLMError("--image needs the vision projector: pass --mmproj MMPROJ.gguf")
        img = parse_image_arg(args.image)
        # rep 0 warms up and is not recorded; pre-processing counts, as in a request
        encodes = [time_image_encode(vis, img, min_pixels=args.image_min_pixels, max_pixels=args.image_max_pixels)
                   for _ in range(args.reps + 1)][1:]
        enc_ms = [(e.preprocess_s + e.encode_s) * 1e3 for e in encodes]
        last, merge = encodes[-1], vis.hparams["merge_size"]
        on_cpu = vis.model.weights_device == "CPU"
        work = op_count.vision_encode(args.mmproj, last.grid_h * last.grid_w)
        extra = arithmetic(work, statistics.fmean(enc_ms) / 1e3) if on_cpu else {}
        record(f"image {img.shape[1]}x{img.shape[0]}", "ms", enc_ms, image_tokens=last.image_tokens,
               grid=[last.grid_h // merge, last.grid_w // merge], matrices=vis.model.matmul_type, **extra)
        # Time to first token of a whole agent step: system prompt + screenshot + instruction, cold.
        system = system_prompt(llm.tokenize, args.system_tokens)
        steps = []
        for _ in range(args.reps):
            llm.reset()
            vis.clear_cache()
            steps.append(time_first_token(llm, agent_prompt(system, 0), images=[img],
                                          image_max_pixels=args.image_max_pixels,
                                          image_min_pixels=args.image_min_pixels))
        record("agent step ttft", "s", [s.seconds for s in steps], prompt_tokens=steps[-1].prompt_tokens,
               system_tokens=args.system_tokens)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record("peak RSS", "MiB", [rss])
    return results


def add_bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="measure prompt/generation speed, image encoding and agent-step latency",
                       description="Benchmark one model like llama-bench: prompt processing and generation tok/s, "
                                   "image encode time and tokens, time to first token of an agent step "
                                   "(system prompt + screenshot + instruction) and peak RSS; mean ± stddev over "
                                   "--reps. Prompts are random token ids; generation is greedy and never stops early.")
    b.add_argument("-m", "--model", required=True, help="text GGUF")
    b.add_argument("--mmproj", help="vision projector GGUF (needed for --image)")
    b.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens for the pp test (0: skip)")
    b.add_argument("-n", "--n-gen", type=int, default=128, help="tokens generated for the tg test (0: skip)")
    b.add_argument("--image", help="WxH (a random screenshot of that size) or an image file: adds the image and "
                                   "agent-step tests")
    b.add_argument("--image-max-pixels", type=int, help="resize budget (default: the mmproj's; AutoGLM serves 5000000)")
    b.add_argument("--image-min-pixels", type=int)
    b.add_argument("--system-tokens", type=int, default=1500, help="system prompt length of the agent step")
    b.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    b.add_argument("-ngl", "--gpu-layers", type=int, default=0, help="decoder layers to offload to a GPU backend")
    b.add_argument("--vision-type", default="auto", choices=("auto", "file", "f32", "f16", "bf16"),
                   help="type of the vision tower's matrices (see `run --help`)")
    b.add_argument("-b", "--batch", type=int, default=512)
    b.add_argument("-c", "--ctx", type=int, default=8192, help="context of the agent-step session")
    b.add_argument("-r", "--reps", type=int, default=3)
    b.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    b.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    for name in ("n_prompt", "n_gen", "reps", "system_tokens"):
        if getattr(args, name) < 0 or (name == "reps" and args.reps < 1):
            raise AutoGLMError(f"--{name.replace('_', '-')} must be {'>= 1' if name == 'reps' else '>= 0'}")
    results = run_bench(args)
    if args.json:
        for r in results:
            print(json.dumps(r), flush=True)
        return 0
    print(f"model {results[0]['model']}, ggml {results[0]['ggml']}, CPU kernels {results[0]['cpu_variant']}, "
          f"threads {results[0]['threads']}, clock {results[0]['clock_ghz']:.2f} GHz (measured), "
          f"load {results[0]['load_s']:.2f} s", file=sys.stderr)
    print("| test | mean ± stddev | unit | arithmetic |")
    print("|---|---|---|---|")
    for r in results:
        extra = f" ({r['image_tokens']} tokens)" if "image_tokens" in r else ""
        spread = f" ± {r['stddev']:.2f}" if r["reps"] > 1 else ""
        arith = ""
        if "gops" in r:
            arith = f"{r['gops']:.0f} GOP/s"
            if "share_of_peak" in r:
                arith += f", {100 * r['share_of_peak']:.0f}% of the {r['peak_family']} peak ({r['peak_gops']:.0f})"
        if "weight_gb_s" in r:
            arith = (f"{r['weight_gb_s']:.1f} GB/s of weights, {100 * r['share_of_read_bw']:.0f}% of the read bandwidth "
                     f"({r['read_bw_gb_s']:.1f}, measured)")
        print(f"| {r['test']}{extra} | {r['mean']:.2f}{spread} | {r['unit']} | {arith} |")
    return 0
