"""HF Glm4vForConditionalGeneration checkpoint -> text GGUF + vision-projector (mmproj) GGUF.

Flow: load_checkpoint() reads and validates everything up front;
plan_text()/plan_mmproj() describe each output (metadata + tensors with their storage types and row
sources); write_gguf() streams the tensors through the native quantizer into temporary files that
are renamed into place only when both are complete.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import ConversionError
from ..quant_mix import MMPROJ_OUTTYPES
from .checkpoint import Checkpoint, load_checkpoint
from .common import OUTTYPES
from .gguf_out import GGUFPlan, OutputSet, write_gguf
from .mmproj_gguf import plan_mmproj
from .text_gguf import plan_text

# The vision tower's weight matrices are in one type of MMPROJ_OUTTYPES (no mix); q4_k is the 4-bit
# option (rows that do not fit 256-blocks fall back to Q5_0), q4_0 the legacy one.

__all__ = ["MMPROJ_OUTTYPES", "OUTTYPES", "Checkpoint", "ConvertOptions", "convert_checkpoint",
           "convert_loaded", "load_checkpoint"]


@dataclass
class ConvertOptions:
    outfile: Path | None = None         # default: ./<name>-<OUTTYPE>.gguf
    outtype: str = "q4_0"
    mmproj_outfile: Path | None = None  # default: mmproj-<name>-<MMPROJ_OUTTYPE>.gguf next to the text file
    mmproj_outtype: str = "f16"
    mmproj: bool = True
    force: bool = False
    progress: bool = True
    n_threads: int = 0
    imatrix: Path | None = None         # importance matrix (autoglm-gguf imatrix) for the text model


def default_paths(ckpt: Checkpoint, opts: ConvertOptions) -> tuple[Path, Path | None]:
    text = opts.outfile or Path.cwd() / f"{ckpt.name}-{opts.outtype.upper()}.gguf"
    if not opts.mmproj:
        return text, None
    mmproj = opts.mmproj_outfile or text.parent / f"mmproj-{ckpt.name}-{opts.mmproj_outtype.upper()}.gguf"
    if Path(mmproj).resolve() == Path(text).resolve():
        raise ConversionError(f"text and mmproj outputs are the same file {text}; pass different paths")
    return Path(text), Path(mmproj)


def convert_checkpoint(model_dir: str | Path, opts: ConvertOptions | None = None) -> dict[str, dict]:
    """Convert; returns {output path: {"tensors": n, "bytes": n}}. Raises ConversionError on bad input,
    in which case no output file is left behind."""
    opts = opts or ConvertOptions()
    if opts.outtype not in OUTTYPES:
        raise ConversionError(f"unknown --outtype {opts.outtype!r}: choose one of {', '.join(OUTTYPES)}")
    if opts.mmproj and opts.mmproj_outtype not in MMPROJ_OUTTYPES:
        raise ConversionError(f"unknown --mmproj-outtype {opts.mmproj_outtype!r}: choose one of {', '.join(MMPROJ_OUTTYPES)}")

    with malformed_input(model_dir):
        ckpt = load_checkpoint(model_dir)
    return convert_loaded(ckpt, opts)


@contextlib.contextmanager
def malformed_input(where):
    """Turn the exceptions a malformed input file provokes in reading code (a list where an object was
    expected, a string for a number, a zero divisor, a huge integer) into one ConversionError naming
    the checkpoint, instead of a traceback. Checks with their own messages raise ConversionError."""
    try:
        yield
    except ConversionError:
        raise
    except (AttributeError, TypeError, KeyError, IndexError, ValueError, OverflowError, ZeroDivisionError) as e:
        raise ConversionError(f"{where}: a checkpoint file is malformed ({type(e).__name__}: {e}); check "
                              "config.json, the tokenizer files and the safetensors headers") from e


def _load_imatrix(path: Path):
    from ..imatrix import load_imatrix

    try:
        return load_imatrix(path)
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such importance-matrix file") from None
    except (ValueError, OSError) as e:
        raise ConversionError(f"{path}: not a usable importance matrix ({e})") from e


def convert_loaded(ckpt: Checkpoint, opts: ConvertOptions) -> dict[str, dict]:
    """convert_checkpoint for an already loaded (or synthesized) Checkpoint."""
    text_path, mmproj_path = default_paths(ckpt, opts)
    targets = [text_path] + ([mmproj_path] if mmproj_path else [])
    with OutputSet(targets, force=opts.force) as out:
        im = _load_imatrix(opts.imatrix) if opts.imatrix else None
        with malformed_input(ckpt.path):
            plans: list[GGUFPlan] = [plan_text(ckpt, text_path, opts.outtype, im, str(opts.imatrix or ""))]
            if mmproj_path:
                plans.append(plan_mmproj(ckpt, mmproj_path, opts.mmproj_outtype))
        total_bytes = sum(p.nbytes for p in plans)
        n_tensors = sum(len(p.tensors) for p in plans)
        with tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, disable=not opts.progress,
                  file=sys.stderr, dynamic_ncols=True, desc="convert") as bar:
            done = 0

            def on_tensor(t):
                nonlocal done
                done += 1
                bar.set_postfix_str(f"{done}/{n_tensors} tensors, {t.name}", refresh=False)

            for plan, tmp in zip(plans, out.temps):
                write_gguf(plan, tmp, opts.n_threads, bar.update, on_tensor)
        out.commit()
    return {str(p.path): {"tensors": len(p.tensors), "bytes": p.path.stat().st_size} for p in plans}
