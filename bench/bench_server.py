"""Time to first token of step 2 of an agent conversation: through `autoglm-gguf serve` (HTTP + JSON +
base64 + SSE, the OpenAI SDK as the client, as Open-AutoGLM uses it) vs the in-process API, on the same
files. Step 1 runs first on both paths (so step 2 reuses its prefix, as in a real agent loop), and every
repetition uses fresh screenshots (no image-cache hits), alternating which path goes first.

    python bench/bench_server.py --model M.gguf --mmproj MM.gguf [--image-max-pixels 1000000] [--reps 3]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from autoglm_gguf.agent.conversation import AGENT_SAMPLING  # Open-AutoGLM's sampling

SYSTEM = ("You operate an Android phone for the user. Each turn you get a screenshot and reply with your "
          "reasoning in <think></think> and one action in <answer></answer>: do(action=\"Tap\", element=[x,y]), "
          "do(action=\"Type\", text=\"...\"), do(action=\"Swipe\", start=[x1,y1], end=[x2,y2]), "
          "do(action=\"Back\"), do(action=\"Home\"), do(action=\"Launch\", app=\"...\"), or "
          "finish(message=\"...\"). Coordinates are on a 0-999 grid. ") * 4


def screenshot(width: int, height: int, seed: int) -> str:
    """A phone-like PNG (flat bars, buttons and text-like strokes; compresses like a real screen)."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(200, 256, 3)))
    d = ImageDraw.Draw(img)
    y = 0
    while y < height:
        h = int(rng.integers(60, 240))
        d.rectangle([0, y, width, y + h], fill=tuple(int(v) for v in rng.integers(150, 256, 3)))
        for _ in range(int(rng.integers(3, 12))):
            x0, yy = int(rng.integers(0, width - 200)), y + int(rng.integers(5, max(6, h - 30)))
            d.rectangle([x0, yy, x0 + int(rng.integers(40, 200)), yy + 18], fill=tuple(int(v) for v in rng.integers(0, 120, 3)))
        y += h
    # A photo-like band (a wallpaper, an image in a feed): incompressible pixels, so the PNG weighs what a
    # real 1080x2400 screenshot does (~1.2 MB; flat UI alone compresses to a few tens of KB).
    band = max(1, int(height * 0.16))
    top = int(rng.integers(0, height - band))
    img.paste(Image.fromarray(rng.integers(0, 256, (band, width, 3), dtype=np.uint8)), (0, top))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def conversation(shot1: str, shot2: str) -> tuple[list, list]:
    step1 = [{"role": "system", "content": SYSTEM},
             {"role": "user", "content": [{"type": "image_url", "image_url": {"url": shot1}},
                                          {"type": "text", "text": "Open Settings and turn on Wi-Fi\n\n"
                                                                   "{\"current_app\": \"System Home\"}"}]}]
    # Open-AutoGLM drops earlier screenshots and keeps the answers.
    step2 = [step1[0], {"role": "user", "content": [step1[1]["content"][1]]},
             {"role": "assistant", "content": "<think>Settings is on the home screen.</think>"
                                              "<answer>do(action=\"Tap\", element=[500,320])</answer>"},
             {"role": "user", "content": [{"type": "image_url", "image_url": {"url": shot2}},
                                          {"type": "text", "text": "** Screen Info **\n\n{\"current_app\": \"Settings\"}"}]}]
    return step1, step2




def ttft_in_process(llm, msgs, max_pixels) -> float:
    t0 = time.perf_counter()
    for chunk in llm.create_chat_completion(msgs, stream=True, max_tokens=2, image_max_pixels=max_pixels,
                                            openai_penalties=True, **AGENT_SAMPLING):
        if chunk["choices"][0]["delta"].get("content"):
            break
    return time.perf_counter() - t0


def ttft_server(client, msgs, max_pixels) -> float:
    t0 = time.perf_counter()
    stream = client.chat.completions.create(model="m", messages=msgs, stream=True, max_tokens=2,
                                            extra_body={"image_max_pixels": max_pixels}, **AGENT_SAMPLING)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--mmproj", required=True)
    ap.add_argument("--image-max-pixels", type=int, default=1_000_000)
    ap.add_argument("--screen", default="1080x2400")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    w, h = (int(v) for v in args.screen.split("x"))

    import openai

    from autoglm_gguf import AutoGLM

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    cmd = [sys.executable, "-m", "autoglm_gguf.cli", "serve", "-m", args.model, "--mmproj", args.mmproj,
           "--port", str(port), "-c", "8192"] + (["-t", str(args.threads)] if args.threads else [])
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import httpx

        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise SystemExit("the server exited")
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=3600)
        llm = AutoGLM(args.model, mmproj_path=args.mmproj, n_ctx=8192, n_threads=args.threads)
        res = {"server": [], "in_process": []}
        for rep in range(args.reps):
            shots = [screenshot(w, h, 100 * rep + k) for k in range(2)]
            step1, step2 = conversation(*shots)
            paths = [("in_process", lambda m: ttft_in_process(llm, m, args.image_max_pixels)),
                     ("server", lambda m: ttft_server(client, m, args.image_max_pixels))]
            for name, fn in (paths if rep % 2 == 0 else paths[::-1]):
                fn(step1)                      # step 1 fills this path's cache
                res[name].append(fn(step2))    # step 2: what an agent waits for each turn
                print(f"rep {rep} {name}: step-2 TTFT {res[name][-1] * 1e3:.0f} ms", flush=True)
        med = {k: statistics.median(v) for k, v in res.items()}
        png_bytes = len(base64.b64decode(shots[1].split(",", 1)[1]))
        summary = {"ttft_s": res, "median_s": med, "server_over_in_process": med["server"] / med["in_process"],
                   "overhead_ms": (med["server"] - med["in_process"]) * 1e3, "png_bytes": png_bytes,
                   "screen": args.screen, "image_max_pixels": args.image_max_pixels,
                   "machine": {"cpu": platform.processor() or _cpu_model(), "cores": os.cpu_count(),
                               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}}
        print(json.dumps({k: summary[k] for k in ("median_s", "server_over_in_process", "overhead_ms")}, indent=1))
        if args.out:
            Path(args.out).write_text(json.dumps(summary, indent=1))
    finally:
        server.terminate()
        server.wait(30)


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    main()
