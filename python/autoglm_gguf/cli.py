"""The `autoglm-gguf` command line: demo | convert | quantize | run | serve | agent | bench | info."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import AutoGLMError
from .quant_mix import MMPROJ_OUTTYPES, PRESETS

TEXT_OUTTYPES = tuple(PRESETS)


def _version_text() -> str:
    from . import _core

    return (f"autoglm-gguf {_core.__version__}\n"
            f"ggml {_core.ggml_version()} (commit {_core.ggml_commit()})\n" + _devices_text())


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import ConvertOptions, convert_checkpoint

    model_dir = args.model_dir
    force = args.force
    if model_dir is None:
        from ._tiny.checkpoint import write_checkpoint

        demo = Path(args.demo_dir).resolve()
        print(f"No checkpoint given: generating a tiny RANDOM-WEIGHT GLM-4.1V-architecture checkpoint in "
              f"{demo / 'tiny-glm4v-random'} and converting that (a demo of the pipeline; its outputs are "
              "meaningless). Pass a Hugging Face checkpoint directory to convert a real model.", file=sys.stderr)
        demo.mkdir(parents=True, exist_ok=True)
        model_dir = write_checkpoint(demo / "tiny-glm4v-random")
        if args.outfile is None:
            args.outfile = str(demo / f"{Path(model_dir).name}-{args.outtype.upper()}.gguf")
        force = True  # the demo directory is ours to overwrite
    opts = ConvertOptions(
        outfile=Path(args.outfile) if args.outfile else None,
        outtype=args.outtype,
        mmproj_outfile=Path(args.mmproj_out) if args.mmproj_out else None,
        mmproj_outtype=args.mmproj_outtype,
        mmproj=not args.no_mmproj,
        force=force,
        progress=not args.quiet,
        n_threads=args.threads,
        imatrix=Path(args.imatrix) if args.imatrix else None,
    )
    result = convert_checkpoint(Path(model_dir), opts)
    if not args.quiet:
        for path, stats in result.items():
            print(f"wrote {path} ({stats['tensors']} tensors, {stats['bytes'] / 2**20:.1f} MiB)", file=sys.stderr)
    for path in result:
        print(Path(path).resolve())
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from .quantize import quantize_gguf

    res = quantize_gguf(args.input, args.output, args.type, imatrix=args.imatrix, n_threads=args.threads,
                        force=args.force, progress=not args.quiet, output_tensor_type=args.output_tensor_type,
                        token_embedding_type=args.token_embedding_type, pure=args.pure, dry_run=args.dry_run)
    if args.dry_run:
        print(f"{args.type}: {res.bytes} bytes of tensor data ({res.bytes / 2**30:.2f} GiB); nothing written")
        return 0
    if not args.quiet:
        counts: dict[str, int] = {}
        for t in res.types.values():
            counts[t] = counts.get(t, 0) + 1
        mix = ", ".join(f"{n} {t}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        print(f"wrote {res.path} ({res.bytes / 2**20:.1f} MiB; tensors: {mix})", file=sys.stderr)
        for line in res.fallbacks:
            print(f"  row length does not fit the type, fell back: {line}", file=sys.stderr)
    print(Path(res.path).resolve())
    return 0


def _quantize_epilog() -> str:
    from .quant_mix import PRESETS

    return "types:\n" + "\n".join(f"  {p.name:8s} {p.about}" for p in PRESETS.values())


def _gemm_isa_text() -> str:
    """The instruction set of our GEMMs and GEMVs, or why AUTOGLM_GEMM_ISA leaves none."""
    from . import _core

    try:
        return _core._gemm_isa()
    except ValueError as e:
        return f"none: {e}"


def _devices_text() -> str:
    from . import _core

    lines = [f"backends: {', '.join(_core.backends())}"]
    runnable = [v["name"] for v in _core.cpu_variants() if v["runnable"]]
    variants = f" (runnable here: {', '.join(runnable)})" if runnable else ""
    lines.append(f"CPU kernels: {_core.cpu_variant()}{variants}; features: {' '.join(_core.cpu_features())}")
    if _core._gemm_available():
        lines.append(f"our GEMMs and decode GEMVs: {_gemm_isa_text()} (runnable here: {', '.join(_core._gemm_isas())})")
    for d in _core.devices():
        mem = f", {d['memory_total'] / 2**30:.1f} GiB" if d["memory_total"] else ""
        lines.append(f"device {d['name']}: {d['description']} ({d['type']}, {d['backend']} backend{mem})")
    if not any(d["type"] in ("gpu", "igpu") for d in _core.devices()):
        lines.append("no GPU: this build runs on the CPU (-ngl is ignored); see the README's 'GPU offload'")
    return "\n".join(lines)


def _cmd_info(args: argparse.Namespace) -> int:
    from .gguf_info import format_summary, summarize

    if not args.files:  # the machine, as this build sees it
        if args.json:
            from . import _core

            print(json.dumps({"backends": _core.backends(), "devices": _core.devices(),
                              "cpu_variant": _core.cpu_variant(), "cpu_variants": _core.cpu_variants(),
                              "cpu_features": _core.cpu_features(),
                              "gemm_isa": _gemm_isa_text() if _core._gemm_available() else None,
                              "gemm_isas": _core._gemm_isas()}, indent=2))
        else:
            print(_devices_text())
        return 0
    summaries = [summarize(p) for p in args.files]
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2))
    else:
        print("\n\n".join(format_summary(s) for s in summaries))
    return 0


def _cmd_imatrix(args: argparse.Namespace) -> int:
    from .imatrix import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autoglm-gguf", description="Run AutoGLM-Phone-9B / GLM-4.1V locally from GGUF files.")
    p.add_argument("--version", action="store_true", help="print versions, ggml backends and devices, then exit")
    sub = p.add_subparsers(dest="command")

    c = sub.add_parser("convert", help="convert a Hugging Face Glm4v checkpoint to a text GGUF + mmproj GGUF",
                       description="Convert a Hugging Face Glm4vForConditionalGeneration checkpoint directory into a "
                                   "text-model GGUF and a vision-projector (mmproj) GGUF, laid out as llama.cpp's own "
                                   "converter does. Without HF_DIR, converts a tiny random demo checkpoint.")
    c.add_argument("model_dir", metavar="HF_DIR", nargs="?", help="checkpoint directory (omit for the tiny demo)")
    c.add_argument("-o", "--outfile",
                   help="text GGUF path (default: <name>-<OUTTYPE>.gguf in the current directory, <name> being "
                        "HF_DIR's folder name; the demo's goes in autoglm-demo/)")
    c.add_argument("--outtype", default="q4_0", type=str.lower, choices=TEXT_OUTTYPES,
                   help="llama-quantize's preset for the text model's weight matrices, mix included (default q4_0; "
                        "q4_k_m is llama.cpp's usual choice; see `autoglm-gguf quantize -h` for the list)")
    c.add_argument("--imatrix", metavar="FILE", help="importance matrix for the text model (autoglm-gguf imatrix)")
    c.add_argument("--mmproj-out", help="mmproj GGUF path (default: mmproj-<name>-<MMPROJ_OUTTYPE>.gguf next to the text GGUF)")
    c.add_argument("--mmproj-outtype", default="f16", type=str.lower, choices=MMPROJ_OUTTYPES,
                   help="storage type of the vision tower's weight matrices (default f16)")
    c.add_argument("--no-mmproj", action="store_true", help="write only the text GGUF")
    c.add_argument("--force", action="store_true", help="overwrite existing output files")
    c.add_argument("-t", "--threads", type=int, default=0, help="quantizer threads (default: all cores)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary on stderr")
    c.add_argument("--demo-dir", default="autoglm-demo", help=argparse.SUPPRESS)
    c.set_defaults(func=_cmd_convert)

    q = sub.add_parser("quantize", help="re-quantize an F16/BF16/F32 GGUF (q4_k_m, q5_k_m, iq4_xs, ...), like llama-quantize",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_quantize_epilog(),
                       description="Re-quantize a text GGUF with llama-quantize's per-tensor mix for TYPE (the same "
                                   "bytes llama-quantize writes), or an mmproj GGUF (its weight matrices in TYPE's "
                                   "base type). The output appears only when complete.")
    q.add_argument("input", metavar="IN.gguf", help="F16, BF16 or F32 GGUF (autoglm-gguf convert --outtype f16)")
    q.add_argument("output", metavar="OUT.gguf")
    q.add_argument("type", metavar="TYPE", type=str.lower, help="quantization preset, e.g. q4_k_m (list below)")
    q.add_argument("--imatrix", metavar="FILE", help="importance matrix (autoglm-gguf imatrix or llama-imatrix, GGUF format)")
    q.add_argument("--output-tensor-type", metavar="T", help="type of output.weight (default: the preset's choice)")
    q.add_argument("--token-embedding-type", metavar="T", help="type of token_embd.weight (default: the preset's choice)")
    q.add_argument("--pure", action="store_true", help="no mix: every quantizable tensor in the preset's base type")
    q.add_argument("--dry-run", action="store_true", help="print the size the output would have; write nothing")
    q.add_argument("--force", action="store_true", help="overwrite OUT.gguf if it exists")
    q.add_argument("-t", "--threads", type=int, default=0, help="quantizer threads (default: all cores)")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary on stderr")
    q.set_defaults(func=_cmd_quantize)

    from .cli_run import add_run_parser

    add_run_parser(sub)

    from .bench import add_bench_parser

    add_bench_parser(sub)

    from .server.settings import add_serve_parser

    add_serve_parser(sub)

    from .agent.cli import add_agent_parser

    add_agent_parser(sub)

    from .agent.demo import add_demo_parser

    add_demo_parser(sub)

    from .cli_run import add_offload_args

    x = sub.add_parser("imatrix", help="compute an importance matrix (llama.cpp's imatrix GGUF) from calibration "
                                       "conversations, for quantize --imatrix",
                       description="Evaluate each calibration conversation's full prompt (chat template, screenshots "
                                   "through the vision tower) and write, per decoder weight, the sum of squared inputs "
                                   "per column and the token count, in llama.cpp's imatrix GGUF format. The output "
                                   "appears only when complete. Calibration: a JSONL file, one {\"messages\": [...]} "
                                   "conversation per line (OpenAI form, as Open-AutoGLM sends; image paths relative "
                                   "to the file), or --builtin-calibration.")
    x.add_argument("-m", "--model", help="text model GGUF (F16/BF16/F32 gives the cleanest statistics)")
    x.add_argument("--mmproj", help="vision projector GGUF (default: the one mmproj-*.gguf beside the model, if any)")
    x.add_argument("-f", "--file", metavar="CALIB.jsonl", help="calibration conversations")
    x.add_argument("--builtin-calibration", action="store_true",
                   help="use the built-in agent conversations (Chinese and English, drawn screenshots)")
    x.add_argument("--write-calibration", metavar="PATH.jsonl",
                   help="with --builtin-calibration: write the set (JSONL + PNGs beside it) and exit, to edit or extend")
    x.add_argument("-o", "--output", default="imatrix.gguf", help="output file (default imatrix.gguf)")
    x.add_argument("--process-output", action="store_true", help="also collect output.weight (the output head)")
    x.add_argument("--chunks", type=int, default=None, metavar="N", help="use only the first N conversations")
    x.add_argument("--image-max-pixels", type=int, default=None,
                   help="HF smart_resize budget (2-frame units; AutoGLM serves with 5000000)")
    x.add_argument("-c", "--ctx-size", type=int, default=8192, help="context; longer conversations are skipped")
    x.add_argument("-b", "--batch-size", type=int, default=512)
    x.add_argument("-t", "--threads", type=int, default=None, help="default: physical cores")
    add_offload_args(x)
    x.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    x.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary on stderr")
    x.set_defaults(func=_cmd_imatrix)

    i = sub.add_parser("info", help="describe GGUF files (architecture, hyperparameters, tensor types); "
                                    "with no file, the backends and devices this build can run on")
    i.add_argument("files", nargs="*", metavar="FILE.gguf")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=_cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(_version_text())
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except AutoGLMError as e:
        print(f"autoglm-gguf {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"autoglm-gguf {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"autoglm-gguf {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
