"""`autoglm-gguf demo`: the whole pipeline on a machine with nothing downloaded.

1. generate a tiny RANDOM-WEIGHT checkpoint of AutoGLM-Phone's architecture and convert it to GGUF
   (text model + mmproj), as `autoglm-gguf convert` with no checkpoint does;
2. draw three phone screenshots (home, Settings, Wi-Fi on) with Pillow;
3. run the phone agent over them as a dry run: each screenshot is encoded by the vision tower, the
   model answers under the action grammar, the action is parsed and "executed" on the replay device,
   and an HTML trace draws each action on its screenshot. The demo takes every step even when the
   random model says finish earlier (a real run stops there).

The weights are random, so the thinking is noise and the actions arbitrary; the grammar is what makes
every one of them a well-formed action. With the real model the same run is
`autoglm-gguf agent -m AutoGLM-Phone-9B-Q4_0.gguf --dry-run SCREENS "task"` (or a phone over adb).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEMO_TASK = "打开设置并开启Wi-Fi"


def add_demo_parser(sub) -> None:
    d = sub.add_parser("demo", help="convert a tiny random demo model and run the phone agent on drawn screenshots",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--dir", default="autoglm-demo", help="where the demo writes its files (default ./autoglm-demo)")
    d.add_argument("--steps", type=int, default=3, help="agent steps, one per screenshot (default 3)")
    d.add_argument("-t", "--threads", type=int, default=None)
    d.set_defaults(func=_cmd_demo)


def _convert(demo: Path) -> tuple[Path, Path]:
    from .._tiny.checkpoint import write_checkpoint
    from ..convert import ConvertOptions, convert_checkpoint

    ckpt = write_checkpoint(demo / "tiny-glm4v-random")
    text = demo / "tiny-glm4v-random-Q4_0.gguf"
    mmproj = demo / "mmproj-tiny-glm4v-random-F16.gguf"
    convert_checkpoint(Path(ckpt), ConvertOptions(outfile=text, outtype="q4_0", mmproj_outfile=mmproj,
                                                  mmproj_outtype="f16", force=True, progress=False))
    return text, mmproj


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..errors import AutoGLMError
    from ..model import AutoGLM
    from .backends import LocalModel
    from .conversation import builtin_system_prompt
    from .device import ReplayDevice
    from .loop import AgentResult, PhoneAgent
    from .screens import write_demo_screens
    from .trace import TraceWriter

    if args.steps < 1:
        raise AutoGLMError(f"--steps must be >= 1, got {args.steps}")
    demo = Path(args.dir).resolve()
    demo.mkdir(parents=True, exist_ok=True)
    say = lambda msg: print(msg, flush=True)
    say(f"1/3 converting a tiny RANDOM-WEIGHT GLM-4.1V-architecture checkpoint to GGUF in {demo} "
        "(the demo model's answers are meaningless)")
    text, mmproj = _convert(demo)
    say(f"    {text.name}, {mmproj.name}")
    screens = write_demo_screens(demo / "screens")
    say(f"2/3 drew {len(screens)} phone screenshots in {demo / 'screens'}")
    say(f"3/3 agent dry run: \"{DEMO_TASK}\", the action grammar on")
    llm = AutoGLM(text, mmproj_path=mmproj, n_ctx=8192, n_threads=args.threads, seed=0)
    # Short answers: random weights would otherwise think for the whole token budget.
    backend = LocalModel(llm, max_tokens=320, max_thinking_tokens=48, max_string_chars=40)
    device = ReplayDevice(demo / "screens")
    trace = TraceWriter(demo / "trace", DEMO_TASK)

    def on_step(step) -> None:
        t = step.timings
        action = step.action.to_call() if step.action else f"(unparsed: {step.parse_error})"
        if len(action) > 90:
            action = action[:90] + "…"
        say(f"    step {step.index}: {action!r}\n"
            f"      image {t.get('image_encode_ms', 0):.0f} ms ({t.get('image_tokens', 0)} tokens), first token "
            f"{t.get('ttft_ms', 0):.0f} ms, {t.get('generated_tokens', 0)} tokens generated "
            f"(grammar {t.get('grammar_ms', 0):.1f} ms)")

    agent = PhoneAgent(backend, device, system_prompt=builtin_system_prompt("en"), max_steps=args.steps,
                       confirm=lambda message: False, take_over=None, on_step=on_step, sleep=lambda s: None,
                       trace=trace)
    for i in range(args.steps):
        agent.step(DEMO_TASK if i == 0 else None)
    steps = agent.steps
    parsed = sum(s.action is not None for s in steps)
    trace.finish(AgentResult(False, f"demo: {args.steps} steps taken", steps))
    say(f"done: {len(steps)} step(s), {parsed} well-formed action(s); the replay phone received "
        f"{[a['action'] for a in device.actions] or 'no actions'} (a finish or Wait sends none)")
    say(f"trace (open in a browser): {trace.path}")
    say("With the real model: autoglm-gguf convert /path/to/AutoGLM-Phone-9B, then "
        "autoglm-gguf agent -m AutoGLM-Phone-9B-Q4_0.gguf \"task\" (a phone over adb, or --dry-run SCREENS_DIR).")
    if parsed != len(steps):
        print("demo: some answers did not parse", file=sys.stderr)
        return 1
    return 0
