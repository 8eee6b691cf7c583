"""`autoglm-gguf agent "task"`: operate an Android phone (adb) with the model in this process, or with
any OpenAI-compatible endpoint (--base-url); --dry-run replays a folder of screenshots instead."""

from __future__ import annotations

import argparse
import sys

from ..cli_run import add_offload_args
from ..errors import AutoGLMError


def add_agent_parser(sub) -> None:
    a = sub.add_parser("agent", help="operate an Android phone toward a task (AutoGLM's phone agent, offline)",
                       description="Each step: a screenshot of the phone, the model's reasoning and one action "
                                   "(tap, type, swipe, launch, ...) carried out over adb, until the model finishes.")
    a.add_argument("task", help='what to do, e.g. "打开设置并开启Wi-Fi" or "Open Settings and turn on Wi-Fi"')
    a.add_argument("-m", "--model", help="text model GGUF (not needed with --base-url)")
    a.add_argument("--mmproj", default="auto", help="vision projector GGUF (default: the mmproj-*.gguf beside the model)")
    a.add_argument("--base-url", help="use an OpenAI-compatible endpoint instead of a local model "
                                      "(e.g. http://127.0.0.1:8080/v1 for autoglm-gguf serve, or vLLM)")
    a.add_argument("--model-name", default="autoglm-phone-9b", help="model id at --base-url")
    a.add_argument("--api-key", default="EMPTY", help="API key for --base-url")
    a.add_argument("--device", default="adb", choices=["adb", "hdc"], help="phone connection: adb (Android, default) or hdc (HarmonyOS)")
    a.add_argument("-s", "--serial", help="device serial when several are connected (adb devices)")
    a.add_argument("--lang", default="cn", choices=["cn", "en"], help="system prompt language (default cn)")
    a.add_argument("--system-prompt-file", help="use this system prompt (default: Open-AutoGLM's, when the "
                                                "phone-agent package is installed; else a built-in one)")
    a.add_argument("--max-steps", type=int, default=100)
    a.add_argument("--image-max-pixels", type=int, default=5_000_000,
                   help="resize bound for screenshots (AutoGLM's serving setting, 5000000)")
    a.add_argument("-c", "--ctx-size", type=int, default=16384)
    a.add_argument("-t", "--threads", type=int, default=None)
    add_offload_args(a)
    a.add_argument("--dry-run", metavar="SCREENSHOT_DIR",
                   help="no phone: replay the PNGs of this folder in order and record the actions")
    a.add_argument("--dry-run-app", default="System Home", help="the current app a dry run reports")
    a.add_argument("--trace", metavar="DIR", help="write an HTML report of the run (DIR/index.html): screenshots "
                                                 "with each action drawn, reasoning, timings")
    a.add_argument("--yes", action="store_true", help="allow sensitive taps (payments, sending) without asking")
    a.add_argument("-q", "--quiet", action="store_true", help="do not stream the model's reasoning")
    a.add_argument("--no-grammar", dest="grammar", action="store_false",
                   help="do not constrain answers to well-formed actions (by default the model can only write "
                        "a valid action after its thinking)")
    a.set_defaults(func=_cmd_agent)


def _ask(prompt: str) -> bool:
    try:
        return input(prompt).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _device(args):
    from .device import AdbDevice, ReplayDevice

    if args.dry_run:
        return ReplayDevice(args.dry_run, app=args.dry_run_app)
    if args.device == "hdc":
        from .hdc import HdcDevice

        dev = HdcDevice(args.serial)
        dev.check()
        return dev
    dev = AdbDevice(args.serial)
    dev.check()
    return dev


def _model(args):
    if args.base_url:
        from .backends import RemoteModel

        return RemoteModel(args.base_url, args.model_name, args.api_key, grammar=args.grammar)
    if not args.model:
        raise AutoGLMError("give the model (-m MODEL.gguf) or an endpoint (--base-url URL)")
    from ..model import AutoGLM
    from ..server.settings import resolve_mmproj

    mmproj = resolve_mmproj(args.model, args.mmproj)
    if mmproj is None:
        raise AutoGLMError(f"no vision projector found beside {args.model}: pass --mmproj mmproj-....gguf")
    llm = AutoGLM(args.model, mmproj_path=mmproj, n_ctx=args.ctx_size, n_threads=args.threads,
                  n_gpu_layers=args.gpu_layers, mmproj_offload=args.mmproj_offload,
                  vision_matmul_type=args.vision_matmul_type)
    print(f"placement: {llm.placement_summary()}", file=sys.stderr, flush=True)
    return llm


def _cmd_agent(args: argparse.Namespace) -> int:
    from . import conversation
    from .loop import PhoneAgent

    interactive = sys.stdin.isatty() and not args.yes
    confirm = (lambda msg: True) if args.yes else (
        (lambda msg: _ask(f"\nsensitive action: {msg}\nallow it? [y/N] ")) if interactive else None)
    def wait_for_user(msg: str) -> None:
        _ask(f"\nthe phone needs you: {msg}\npress Enter when done ")

    take_over = wait_for_user if interactive else None
    if args.max_steps < 1:
        raise AutoGLMError(f"--max-steps must be >= 1, got {args.max_steps}")
    device = _device(args)
    model = _model(args)
    out = sys.stdout

    def on_piece(piece: str) -> None:
        if not args.quiet:
            out.write(piece)
            out.flush()

    def on_step(step) -> None:
        t = step.timings
        action = step.action.to_call() if step.action else f"(unparsed: {step.parse_error})"
        print(f"\n[step {step.index}] {action} -> {step.outcome.message or 'ok'}", file=out, flush=True)
        parts = [f"screenshot {t.get('screenshot_ms', 0):.0f} ms", f"first token {t.get('ttft_ms', 0):.0f} ms"]
        if "image_encode_ms" in t:
            parts.append(f"image {t['image_encode_ms']:.0f} ms ({t.get('image_tokens', 0)} tokens)")
        if "prompt_tokens" in t:
            parts.append(f"prompt {t['prompt_tokens']} tokens ({t.get('prompt_tokens_reused', 0)} reused) "
                         f"{t.get('prompt_ms', 0):.0f} ms")
        if "generated_tokens" in t:
            parts.append(f"generated {t['generated_tokens']} tokens {t.get('generation_ms', 0):.0f} ms")
        if "grammar_ms" in t:
            parts.append(f"grammar {t['grammar_ms']:.0f} ms")
        print("  " + ", ".join(parts), file=sys.stderr, flush=True)

    trace = None
    if args.trace:
        from .trace import TraceWriter

        trace = TraceWriter(args.trace, args.task)
    agent = PhoneAgent(model, device, system_prompt=conversation.system_prompt(args.lang, args.system_prompt_file),
                       max_steps=args.max_steps, image_max_pixels=args.image_max_pixels, confirm=confirm,
                       take_over=take_over, on_piece=on_piece, on_step=on_step, trace=trace, grammar=args.grammar)
    result = agent.run(args.task)
    print(f"\n{'finished' if result.finished else 'stopped'} after {len(result.steps)} step(s): {result.message}",
          file=out, flush=True)
    if trace is not None:
        print(f"trace: {trace.path}", file=out, flush=True)
    return 0 if result.finished else 3
