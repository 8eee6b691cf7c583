"""`autoglm-gguf run`: one prompt, or an interactive chat, streamed to stdout (flags as in llama.cpp)."""

from __future__ import annotations

import argparse
import sys
import time


def add_run_parser(sub) -> None:
    r = sub.add_parser("run", help="generate from a prompt, or chat interactively (without -p)",
                       description="Stream an answer to stdout; timings go to stderr. Without -p: interactive chat "
                                   "(/clear forgets the conversation, /quit exits; Ctrl-C stops an answer, twice exits).")
    r.add_argument("-m", "--model", required=True, help="text model GGUF")
    r.add_argument("--mmproj", help="vision projector GGUF (default: the one mmproj-*.gguf beside the model, if any)")
    r.add_argument("--image", action="append", default=[], metavar="PATH",
                   help="image for the prompt (repeat for several; they fill the user message before the text)")
    r.add_argument("--image-max-pixels", type=int, default=None,
                   help="HF smart_resize budget (2-frame units; AutoGLM serves with 5000000)")
    r.add_argument("--image-min-pixels", type=int, default=None)
    r.add_argument("-p", "--prompt", help="user message (wrapped in the chat template unless --raw)")
    r.add_argument("-sys", "--system", help="system message")
    r.add_argument("--raw", action="store_true", help="send -p as raw text, without the chat template")
    r.add_argument("-n", "--n-predict", type=int, default=512, help="max tokens to generate (-1: until the context is full)")
    r.add_argument("-c", "--ctx-size", type=int, default=8192)
    r.add_argument("-b", "--batch-size", type=int, default=512)
    r.add_argument("-t", "--threads", type=int, default=None, help="default: physical cores")
    add_offload_args(r)
    r.add_argument("--temp", type=float, default=0.0, help="temperature (0 = greedy)")
    r.add_argument("--top-k", type=int, default=0)
    r.add_argument("--top-p", type=float, default=1.0)
    r.add_argument("--min-p", type=float, default=0.0)
    r.add_argument("--repeat-penalty", type=float, default=1.0)
    r.add_argument("-s", "--seed", type=int, default=None)
    r.add_argument("-v", "--verbose", action="store_true")
    r.set_defaults(func=cmd_run)


def _stream(llm, prompt: str, args, images=None) -> str:
    out = []
    for piece in llm.generate(prompt, max_tokens=args.n_predict, temperature=args.temp, top_k=args.top_k,
                              top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                              seed=args.seed, stream=True, images=images or None,
                              image_max_pixels=args.image_max_pixels, image_min_pixels=args.image_min_pixels):
        sys.stdout.write(piece)
        sys.stdout.flush()
        out.append(piece)
    return "".join(out)


def _timings_line(llm, load_s: float | None = None) -> str:
    t = llm.last_timings or {}
    s = (f"prompt: {t.get('prompt_tokens', 0)} tokens ({t.get('prompt_tokens_reused', 0)} reused), "
         f"{t.get('prompt_tokens_per_s', 0.0):.1f} tok/s | generated: {t.get('generated_tokens', 0)} tokens, "
         f"{t.get('generation_tokens_per_s', 0.0):.1f} tok/s")
    if t.get("image_tokens"):
        s += f" | images: {t['image_tokens']} tokens, encoded in {t['image_encode_ms']:.0f} ms"
    return s + (f" | load: {load_s:.2f} s" if load_s is not None else "")


def add_offload_args(p: argparse.ArgumentParser) -> None:
    """-ngl and --no-mmproj-offload, the same for run, serve and agent."""
    p.add_argument("-ngl", "--gpu-layers", type=int, default=0,
                   help="decoder layers on the GPU (-1: all, with the output layer; needs a GPU build)")
    p.add_argument("--no-mmproj-offload", dest="mmproj_offload", action="store_false",
                   help="keep the vision tower on the CPU even when there is a GPU")
    p.add_argument("--vision-type", dest="vision_matmul_type", default="auto",
                   choices=("auto", "file", "f32", "f16", "bf16"),
                   help="type of the vision tower's matrices: auto (default) = bf16 matrices and attention where the "
                        "CPU has AVX512_BF16, as production servers run the tower (about twice as fast, embeddings "
                        "within ~2%% of F32), else as in the file; file = as stored, in F32 arithmetic (transformers' "
                        "numbers within 1e-4); or f32, f16, bf16 converted at load")


def default_mmproj(model: str) -> str | None:
    """The one mmproj-*.gguf beside the model, as llama.cpp users expect; None if there is none or several."""
    from pathlib import Path

    found = sorted(Path(model).resolve().parent.glob("mmproj-*.gguf"))
    return str(found[0]) if len(found) == 1 else None


def _user_message(text: str, n_images: int) -> dict:
    if not n_images:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}


def cmd_run(args: argparse.Namespace) -> int:
    from .model import AutoGLM

    t0 = time.perf_counter()
    mmproj = args.mmproj or default_mmproj(args.model)
    llm = AutoGLM(args.model, mmproj_path=mmproj, n_ctx=args.ctx_size, n_batch=args.batch_size,
                  n_threads=args.threads, n_gpu_layers=args.gpu_layers, mmproj_offload=args.mmproj_offload,
                  vision_matmul_type=args.vision_matmul_type, seed=args.seed, verbose=args.verbose)
    load_s = time.perf_counter() - t0
    print(f"placement: {llm.placement_summary()}", file=sys.stderr, flush=True)
    system = [{"role": "system", "content": args.system}] if args.system else []

    if args.prompt is not None:
        if args.raw:
            prompt = args.prompt
        else:
            prompt = llm.apply_chat_template(system + [_user_message(args.prompt, len(args.image))])
        _stream(llm, prompt, args, args.image)
        sys.stdout.write("\n")
        print(_timings_line(llm, load_s), file=sys.stderr)
        return 0
    return _chat(llm, system, args)


def _chat(llm, system: list, args) -> int:
    history = list(system)
    images: list = []          # every image of the conversation, in slot order
    pending: list = list(args.image)  # attached to the next user message
    interactive = sys.stdin.isatty()
    last_interrupt = 0.0
    while True:
        try:
            if interactive:
                sys.stdout.write("> ")
                sys.stdout.flush()
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            return 130
        if not line:
            return 0
        text = line.rstrip("\n")
        if text.strip() == "/quit":
            return 0
        if text.strip() == "/clear":
            history = list(system)
            images, pending = [], []
            llm.reset()
            continue
        if text.startswith("/image "):
            pending.append(text[len("/image "):].strip())
            continue
        if not text.strip():
            continue
        history.append(_user_message(text, len(pending)))
        images, pending = images + pending, []
        try:
            answer = _stream(llm, llm.apply_chat_template(history), args, images)
        except KeyboardInterrupt:
            now = time.monotonic()
            if now - last_interrupt < 2.0:
                return 130
            last_interrupt = now
            answer = ""
            sys.stdout.write("\n[interrupted; Ctrl-C again to exit]")
        sys.stdout.write("\n")
        sys.stdout.flush()
        history.append({"role": "assistant", "content": answer})
        if args.verbose or not interactive:
            print(_timings_line(llm), file=sys.stderr)
