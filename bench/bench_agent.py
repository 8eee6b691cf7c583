"""Per-step time to first token of the built-in phone agent, in process, steps 1..N of one task.

    python bench/bench_agent.py --model M.gguf --mmproj MM.gguf --image-max-pixels 1000000 [--steps 5]
        [--size 1440x3200] [--max-tokens 48] [--threads N] [--out results/agent_steps.json]

Each step gets a new screenshot (a drawn phone screen at --size with a different photo-like band, so
no image-cache hits and a realistic PNG), the conversation is Open-AutoGLM's (our built-in system
prompt, Chinese), and the session is kept across steps as the agent keeps it: step 1 evaluates the
system prompt, the screenshot and the task; step k > 1 reuses the cached history and evaluates only
the new turn. Answers are capped at --max-tokens (random weights produce no meaningful action, so the
loop keeps stepping; what is timed is the time to the first token). Grammar off: its cost is per
generated token, not part of the time to first token.

Time to first token is taken as image encode + prefill (the first token is sampled from the prefill's
logits), not as the arrival of the first streamed piece: the random 9B weights mostly pick vocabulary
ids the synthetic tokenizer leaves unused, which have no text, so the first piece can come at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--mmproj", required=True)
    ap.add_argument("--image-max-pixels", type=int, default=5_000_000)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--size", default="1440x3200", help="screenshot size WxH (default: a QHD+ phone)")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ctx", type=int, default=16384)
    ap.add_argument("--out", help="append the result as one JSON line to this file")
    args = ap.parse_args()

    from PIL import Image

    from autoglm_gguf import AutoGLM
    from autoglm_gguf.agent import LocalModel, PhoneAgent, ReplayDevice, Screenshot
    from autoglm_gguf.agent.conversation import builtin_system_prompt
    from autoglm_gguf.agent.screens import home_screen, settings_screen

    width, height = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    pngs = []
    for i in range(args.steps):
        img = (home_screen if i % 2 == 0 else settings_screen)(width, height)
        band = height // 6
        img.paste(Image.fromarray(rng.integers(0, 256, (band, width, 3), dtype=np.uint8)), (0, height - 2 * band))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        pngs.append(buf.getvalue())

    class FreshScreens(ReplayDevice):
        """A new screenshot at every step, whatever the model did."""

        def __init__(self):
            self.n, self.actions, self.log_path, self._app, self._changes = 0, [], None, "System Home", 0

        def screenshot(self):
            png = pngs[min(self.n, len(pngs) - 1)]
            self.n += 1
            return Screenshot(png, width, height)

    t0 = time.perf_counter()
    llm = AutoGLM(args.model, mmproj_path=args.mmproj, n_ctx=args.ctx, n_threads=args.threads)
    load_s = time.perf_counter() - t0
    system = builtin_system_prompt("cn")
    backend = LocalModel(llm, image_max_pixels=args.image_max_pixels, max_tokens=args.max_tokens, grammar=False)
    agent = PhoneAgent(backend, FreshScreens(), system_prompt=system, sleep=lambda s: None, confirm=lambda m: False)
    steps = []
    for i in range(args.steps):
        step = agent.step("打开设置并开启Wi-Fi" if i == 0 else None)
        t = {k: v for k, v in step.timings.items() if isinstance(v, (int, float, str))}
        t["first_token_ms"] = t.get("image_encode_ms", 0.0) + t["prompt_ms"]
        steps.append(t)
        print(f"step {i + 1}: first token {t['first_token_ms'] / 1e3:.1f} s (image {t.get('image_encode_ms', 0) / 1e3:.1f} s, "
              f"{t.get('image_tokens')} image tokens; prompt {t['prompt_tokens']} tokens, "
              f"{t['prompt_tokens_reused']} reused, {t['prompt_ms'] / 1e3:.1f} s)", flush=True)
    result = {"model": Path(args.model).name, "mmproj": Path(args.mmproj).name, "size": args.size,
              "image_max_pixels": args.image_max_pixels, "threads": args.threads or os.cpu_count(),
              "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"), "load_s": load_s,
              "system_prompt_tokens": len(llm.tokenize(system, special=False)),
              "max_tokens": args.max_tokens, "steps": steps}
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(result, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
