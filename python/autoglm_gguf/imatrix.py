"""Importance matrix ("imatrix"): which input columns of each weight matrix see large activations, so a
quantizer can spend its error where it matters least. Computed with this runtime from calibration
conversations (calibration.py), images included, and stored in llama.cpp's imatrix GGUF format, so
llama-quantize and `autoglm-gguf quantize` both read it.

The file (ref: llama.cpp tools/imatrix/imatrix.cpp save_imatrix, common/imatrix-loader.cpp):
  general.type = "imatrix", imatrix.datasets (array of str), imatrix.chunk_count (u32),
  imatrix.chunk_size (u32); per weight, in sorted name order, `<name>.in_sum2` F32 ne=[n_cols, 1]
  (sum of x[j]^2 over every input row) and `<name>.counts` F32 ne=[1, 1] (the number of rows); as
  ggml writes them, the trailing 1 is not stored (n_dims = 1). Same data, same bytes as llama-imatrix.
Here a "chunk" is one calibration conversation, and chunk_size their mean length in tokens, so that
count / chunk_size is about chunk_count as in llama.cpp's files (llama-quantize only prints both).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .calibration import CalibrationError, Conversation
from .errors import AutoGLMError, ContextFullError

KEY_TYPE = "general.type"
KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"
SUM_SUFFIX, COUNT_SUFFIX = ".in_sum2", ".counts"


class ImatrixError(AutoGLMError, ValueError):
    """An imatrix file that cannot be read or is not an importance matrix, or a collection that failed."""


@dataclass
class Imatrix:
    entries: dict[str, np.ndarray]   # name -> float32 per input column: in_sum2 / count (count 0 -> ones)
    datasets: list[str]
    chunk_count: int
    chunk_size: int


# ------------------------------------------------------------------------------------------ the file
def write_imatrix(path: str | os.PathLike, sums: dict[str, np.ndarray], counts: dict[str, int], datasets: list[str],
                  chunk_count: int, chunk_size: int) -> None:
    """Write raw statistics (sums of squares per column, row counts) as an imatrix GGUF, atomically: a
    temporary file beside `path`, renamed over it once complete (no partial file on error or Ctrl-C)."""
    import gguf

    if set(sums) != set(counts):
        raise ValueError(f"sums and counts name different weights: {sorted(set(sums) ^ set(counts))[:5]}")
    if not datasets or not all(isinstance(d, str) for d in datasets):
        raise ValueError("datasets must be a non-empty list of strings (what the statistics were computed on)")
    for n, c in ((chunk_count, "chunk_count"), (chunk_size, "chunk_size")):
        if not 0 <= int(n) < 2**32:
            raise ValueError(f"{c} must fit in a u32, got {n}")
    arrays = {}
    for name in sorted(sums):
        s = np.asarray(sums[name], dtype=np.float64)
        if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)) or int(counts[name]) < 0:
            raise ValueError(f"{name}: sums must be a non-empty finite 1-D array and the count >= 0")
        # ref: save_imatrix: F32 tensors of ggml shape [ncols, 1] and [1, 1]; ggml's writer drops the
        # trailing 1 (n_dims = 1 in the file), so 1-D arrays give the same bytes as llama-imatrix's files.
        arrays[name] = (s.astype(np.float32), np.array([counts[name]], dtype=np.float32))

    out = Path(path)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        w = gguf.GGUFWriter(str(tmp), arch="")
        # gguf-py always starts with general.architecture; llama.cpp's imatrix files have none.
        w.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)
        w.add_string(KEY_TYPE, "imatrix")
        w.add_array(KEY_DATASETS, list(datasets))
        w.add_uint32(KEY_CHUNK_COUNT, int(chunk_count))
        w.add_uint32(KEY_CHUNK_SIZE, int(chunk_size))
        for name, (s, c) in arrays.items():
            w.add_tensor(name + SUM_SUFFIX, s)
            w.add_tensor(name + COUNT_SUFFIX, c)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_imatrix_raw(path: str | os.PathLike) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], int, int]:
    """({name: (float32 sums [n_mat, n_cols], float32 counts [n_mat])}, datasets, chunk_count, chunk_size)."""
    import gguf

    p = Path(path)
    if not p.is_file():
        raise ImatrixError(f"imatrix file {p} does not exist; make one with `autoglm-gguf imatrix`")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ImatrixError(f"{p} is not a GGUF file; a legacy llama.cpp .dat imatrix can be converted with "
                           f"`llama-imatrix --in-file {p.name} -o {p.stem}.gguf`")
    try:
        r = gguf.GGUFReader(p)
    except Exception as e:
        raise ImatrixError(f"{p}: cannot read this GGUF file ({e}); it is damaged or truncated") from None
    kind = _field(r, KEY_TYPE)
    if kind not in (None, "imatrix"):
        raise ImatrixError(f"{p} is a GGUF file of type {kind!r}, not an importance matrix (general.type = 'imatrix')")
    missing = [k for k in (KEY_DATASETS, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE) if k not in r.fields]
    if missing:  # ref: llama-quantize refuses GGUF imatrix files without this metadata too
        raise ImatrixError(f"{p}: missing imatrix metadata {missing}; is this an importance matrix?")
    datasets = _field(r, KEY_DATASETS)
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or [])
    parts: dict[str, dict[str, np.ndarray]] = {}
    for t in r.tensors:
        for suffix in (SUM_SUFFIX, COUNT_SUFFIX):
            if t.name.endswith(suffix):
                if t.tensor_type != gguf.GGMLQuantizationType.F32:
                    raise ImatrixError(f"{p}: tensor {t.name} is {t.tensor_type.name}; imatrix tensors must be F32")
                parts.setdefault(t.name[:-len(suffix)], {})[suffix] = t
    if not parts:
        raise ImatrixError(f"{p}: no '*.in_sum2' / '*.counts' tensors: not an importance matrix")
    out = {}
    for name, d in sorted(parts.items()):
        if len(d) != 2:
            raise ImatrixError(f"{p}: {name} has {'sums' if SUM_SUFFIX in d else 'counts'} but not "
                               f"{'counts' if SUM_SUFFIX in d else 'sums'}")
        counts = np.asarray(d[COUNT_SUFFIX].data, dtype=np.float32).reshape(-1)
        sums = np.asarray(d[SUM_SUFFIX].data, dtype=np.float32).reshape(-1)
        if counts.size == 0 or sums.size % counts.size:
            raise ImatrixError(f"{p}: {name}: {sums.size} sums do not split into {counts.size} matrices")
        out[name] = (sums.reshape(counts.size, -1), counts)
    return out, datasets, int(_field(r, KEY_CHUNK_COUNT)), int(_field(r, KEY_CHUNK_SIZE))


def _field(r, key: str):
    f = r.fields.get(key)
    return None if f is None else f.contents()


def load_imatrix(path: str | os.PathLike) -> Imatrix:
    """An imatrix file (ours or llama-imatrix's GGUF) as the per-column importances llama-quantize uses:
    in_sum2 / count in float32 per matrix, all ones for a matrix that saw no rows."""
    raw, datasets, chunk_count, chunk_size = read_imatrix_raw(path)
    entries = {}
    for name, (sums, counts) in raw.items():
        # ref: llama.cpp tools/quantize/quantize.cpp load_imatrix: counts rounded to integers, float32 division.
        c = np.round(counts).astype(np.float32)[:, None]
        values = np.where(c > 0, sums / np.where(c > 0, c, np.float32(1)), np.float32(1))
        entries[name] = values.astype(np.float32).reshape(-1)
    return Imatrix(entries, datasets, chunk_count, chunk_size)


# ------------------------------------------------------------------------------------------ collection
@dataclass
class Collected:
    sums: dict[str, np.ndarray]        # float64 per input column
    counts: dict[str, int]             # rows summed
    n_conversations: int = 0           # evaluated
    n_tokens: int = 0                  # prompt cells evaluated (image tokens included)
    skipped: list[str] = field(default_factory=list)   # conversations that did not fit in n_ctx

    @property
    def chunk_size(self) -> int:
        return round(self.n_tokens / self.n_conversations) if self.n_conversations else 0


def collect(llm, conversations: Iterable[Conversation], *, process_output: bool = False,
            image_max_pixels: int | None = None, image_min_pixels: int | None = None,
            on_conversation: Callable[[Conversation, int], None] | None = None,
            on_progress: Callable[[int, int], None] | None = None) -> Collected:
    """Evaluate each conversation's full prompt (chat template; images through the vision tower) from an
    empty context with `llm` (an AutoGLM) and return the statistics gathered over all of them. A
    conversation that does not fit in the context is skipped (listed in `skipped`).
    on_conversation(conversation, n_cells) is called after each one evaluated, on_progress(n_done, n_cells)
    between the micro-batches of one."""
    from . import _core
    from .model import _message_parts

    session = llm._session
    session.imatrix_reset()
    session.imatrix_start(process_output)
    result = Collected({}, {})
    try:
        for conv in conversations:
            try:
                images: list = []
                rendered = [_message_parts(i, m, images)[0] for i, m in enumerate(conv.messages)]
                # The answer belongs to the calibration text too: no generation prompt after a final reply.
                prompt = _core.format_chat(rendered, conv.messages[-1].get("role") != "assistant")
                ids, _ = llm._prompt(prompt, images, image_max_pixels, image_min_pixels)
            except (AutoGLMError, ValueError) as e:
                hint = "; pass the vision projector with --mmproj" if images and llm.vision is None else ""
                raise CalibrationError(f"{conv.where}: {e}{hint}") from None
            try:
                n = session.imatrix_eval(ids, on_progress)
            except ContextFullError:
                result.skipped.append(conv.where)
                continue
            except _core.NativeError as e:  # e.g. non-finite activations
                raise ImatrixError(f"{conv.where}: {e}") from None
            result.n_conversations += 1
            result.n_tokens += n
            if on_conversation:
                on_conversation(conv, n)
    finally:
        session.imatrix_stop()
    for name, (sums, count) in session.imatrix_stats().items():
        result.sums[name] = sums
        result.counts[name] = int(count)
    return result


def run(model: str, calibration: list[Conversation], out: str | os.PathLike, *, datasets: list[str],
        mmproj: str | None = None, process_output: bool = False, n_ctx: int = 8192, n_batch: int = 512,
        n_threads: int | None = None, n_gpu_layers: int = 0, mmproj_offload: bool = True,
        image_max_pixels: int | None = None, progress: bool = True) -> Collected:
    """The `autoglm-gguf imatrix` job: load, collect over `calibration`, write `out` (atomically)."""
    from .model import AutoGLM

    out = Path(out)
    if out.is_dir():
        raise ImatrixError(f"output {out} is a directory; give a file name such as {out / 'imatrix.gguf'}")
    if not out.parent.is_dir():
        raise ImatrixError(f"the output folder {out.parent} does not exist; create it first")
    llm = AutoGLM(model, mmproj_path=mmproj, n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads,
                  n_gpu_layers=n_gpu_layers, mmproj_offload=mmproj_offload, progress=None if progress else False,
                  repack=False)  # the statistics come from ggml's matmul nodes, which read no repacked layout
    from tqdm import tqdm

    with tqdm(total=len(calibration), unit="conv", desc="imatrix", file=sys.stderr, disable=not progress) as bar:
        tokens = [0]

        def step(conv: Conversation, n: int) -> None:
            tokens[0] += n
            bar.set_postfix(tokens=tokens[0], refresh=False)
            bar.update(1)

        def within(done: int, total: int) -> None:  # a 9B prompt with a screenshot takes a while
            bar.set_postfix(tokens=tokens[0], current=f"{done}/{total}")

        result = collect(llm, calibration, process_output=process_output, image_max_pixels=image_max_pixels,
                         on_conversation=step, on_progress=within if progress else None)
    for where in result.skipped:
        print(f"autoglm-gguf imatrix: skipped {where}: longer than the context (n_ctx={n_ctx}); raise -c to "
              "include it", file=sys.stderr)
    if not result.sums:
        raise ImatrixError("no statistics were collected: every conversation was skipped or shorter than 16 "
                           "tokens per micro-batch; use longer conversations or a larger -c")
    write_imatrix(out, result.sums, result.counts, datasets, result.n_conversations, result.chunk_size)
    return result


def run_from_args(args) -> int:
    """`autoglm-gguf imatrix` (cli.py parses the flags)."""
    from .calibration import builtin_calibration, load_calibration, write_calibration
    from .cli_run import default_mmproj

    if args.write_calibration:
        if not args.builtin_calibration:
            raise ImatrixError("--write-calibration writes the built-in set: add --builtin-calibration")
        path = write_calibration(args.write_calibration, builtin_calibration())
        print(path.resolve())
        return 0
    if bool(args.file) == bool(args.builtin_calibration):
        raise ImatrixError("give the calibration conversations: -f CALIB.jsonl, or --builtin-calibration")
    if not args.model:
        raise ImatrixError("the model is missing: -m TEXT.gguf")
    if args.chunks is not None and args.chunks < 1:
        raise ImatrixError(f"--chunks must be >= 1, got {args.chunks}")
    out = Path(args.output)
    if out.exists() and not args.force:
        raise ImatrixError(f"{out} exists; pass --force to overwrite it")
    if args.builtin_calibration:
        conversations, datasets = builtin_calibration(), ["autoglm-gguf built-in agent calibration"]
    else:
        conversations, datasets = load_calibration(args.file), [str(args.file)]
    conversations = conversations[:args.chunks] if args.chunks else conversations
    has_images = any(isinstance(m.get("content"), list) and any(p.get("type") == "image_url" for p in m["content"])
                     for c in conversations for m in c.messages)
    mmproj = args.mmproj or (default_mmproj(args.model) if has_images else None)
    if has_images and not mmproj:
        raise ImatrixError("the calibration conversations have images but there is no vision projector: pass "
                           "--mmproj mmproj-....gguf")
    result = run(args.model, conversations, out, datasets=datasets, mmproj=mmproj, process_output=args.process_output,
                 n_ctx=args.ctx_size, n_batch=args.batch_size, n_threads=args.threads, n_gpu_layers=args.gpu_layers,
                 mmproj_offload=args.mmproj_offload, image_max_pixels=args.image_max_pixels, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {out}: {len(result.sums)} weights, {result.n_conversations} conversations, {result.n_tokens} "
              f"tokens" + (f", {len(result.skipped)} skipped" if result.skipped else ""), file=sys.stderr)
    print(out.resolve())
    return 0
