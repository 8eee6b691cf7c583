"""`autoglm-gguf quantize IN.gguf OUT.gguf TYPE`: re-quantize an F16/BF16/F32 GGUF, as llama-quantize does.

Text models (arch glm4) get llama-quantize's per-tensor mix for the preset (quant_mix.py) and the
same file layout, so for the same input and importance matrix the output is byte-identical to
llama-quantize's. Vision projectors (mmproj, arch clip) get the preset's base type on the ViT's and
merger's weight matrices (mmproj_mix below); llama-quantize cannot read those files at all.
The native writer (requantize.cpp) streams tensor by tensor; the file appears under its name only
when complete (gguf_out.OutputSet), so an error or Ctrl-C never leaves a partial model behind.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import gguf
from tqdm import tqdm

from . import _core
from .errors import ConversionError, GGUFFileError
from .quant_mix import (
    MixOptions,
    ModelShape,
    Preset,
    T,
    TensorInfo,
    allows_quantization,
    fit_tensor,
    plan_types,
    preset,
    requires_imatrix,
)

# llama-quantize's metadata keys for the importance matrix it used (tools/quantize/quantize.cpp)
KV_IMATRIX_FILE = "quantize.imatrix.file"
KV_IMATRIX_DATASET = "quantize.imatrix.dataset"
KV_IMATRIX_ENTRIES = "quantize.imatrix.entries_count"
KV_IMATRIX_CHUNKS = "quantize.imatrix.chunks_count"
_KV_STR_MAX = 127   # llama.cpp's override strings hold 127 bytes


@dataclass
class QuantizeResult:
    path: Path
    types: dict[str, str]                      # tensor name -> type name
    bytes: int
    fallbacks: list[str] = field(default_factory=list)


def _read_input(path: Path) -> tuple[gguf.GGUFReader, str, list[TensorInfo]]:
    try:
        r = gguf.GGUFReader(path)
    except FileNotFoundError:
        raise GGUFFileError(f"{path}: no such file") from None
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise GGUFFileError(f"{path}: not a readable GGUF file ({e})") from e
    field_ = r.fields.get("general.architecture")
    if field_ is None:
        raise GGUFFileError(f"{path}: no general.architecture key; is this a model GGUF?")
    arch = field_.contents()
    tensors = [TensorInfo(t.name, tuple(int(n) for n in t.shape), T(int(t.tensor_type))) for t in r.tensors]
    return r, arch, tensors


def _int_key(r: gguf.GGUFReader, key: str, path: Path) -> int:
    f = r.fields.get(key)
    if f is None:
        raise GGUFFileError(f"{path}: missing metadata {key}")
    return int(f.contents())


def mmproj_mix(tensors: list[TensorInfo], p: Preset, opts: MixOptions) -> list[tuple[TensorInfo, T]]:
    """The vision tower: every 2-D weight matrix of the ViT blocks and the merger in the preset's base
    type (falling back by row length as for text); the patch embedding (a convolution), position
    embeddings, norms and biases keep their type. File order is kept."""
    out = []
    for t in tensors:
        if not (allows_quantization(t) and len(t.ne) == 2):   # allows_quantization excludes .patch_embd
            new = t.type
        elif p.default in (T.F32, T.F16, T.BF16):
            new = p.default
        else:
            new = fit_tensor(t, p.default, opts)
        out.append((t, new))
    return out


def plan(in_path: Path, p: Preset, opts: MixOptions) -> list[tuple[TensorInfo, T]]:
    r, arch, tensors = _read_input(in_path)
    if arch == "clip":
        return mmproj_mix(tensors, p, opts)
    shape = ModelShape(n_layer=_int_key(r, f"{arch}.block_count", in_path),
                       n_head=_int_key(r, f"{arch}.attention.head_count", in_path),
                       n_head_kv=_int_key(r, f"{arch}.attention.head_count_kv", in_path))
    return plan_types(tensors, shape, p, opts)


def _truncate(s: str) -> str:
    return s.encode("utf-8")[:_KV_STR_MAX].decode("utf-8", errors="ignore")


def quantize_gguf(in_path: str | Path, out_path: str | Path, qtype: str, *, imatrix: str | Path | None = None,
                  n_threads: int = 0, force: bool = False, progress: bool = True,
                  output_tensor_type: str | None = None, token_embedding_type: str | None = None,
                  pure: bool = False, dry_run: bool = False) -> QuantizeResult:
    """Write out_path: in_path's tensors in the preset `qtype` (e.g. "q4_k_m"). Raises ConversionError
    or GGUFFileError with what to do; on any failure no output file is left behind. dry_run: plan
    only; `bytes` is then the tensor data size the file would hold (metadata not counted)."""
    from .convert.gguf_out import OutputSet

    in_path, out_path = Path(in_path), Path(out_path)
    try:
        p = preset(qtype)
        opts = MixOptions(pure=pure,
                          output_type=T[output_tensor_type.upper()] if output_tensor_type else None,
                          token_embedding_type=T[token_embedding_type.upper()] if token_embedding_type else None)
    except (ValueError, KeyError) as e:
        raise ConversionError(f"quantize: {e}") from None
    if in_path.resolve() == out_path.resolve():
        raise ConversionError(f"{out_path}: input and output are the same file; choose another output path")

    im = None
    if imatrix is not None:
        from .imatrix import load_imatrix

        try:
            im = load_imatrix(imatrix)
        except FileNotFoundError:
            raise ConversionError(f"{imatrix}: no such importance-matrix file") from None
        except (ValueError, OSError) as e:
            raise ConversionError(f"{imatrix}: not a usable importance matrix ({e})") from e
        opts.has_imatrix = True

    types = plan(in_path, p, opts)
    for t, new in types:
        if t.type in (T.F32, T.F16, T.BF16) or new == t.type:
            continue
        raise ConversionError(f"{in_path}: tensor {t.name} is stored as {t.type.name}; re-quantizing a quantized "
                              "model loses quality twice. Start from the F16/BF16 GGUF (autoglm-gguf convert --outtype f16)")

    if dry_run:
        size = sum(_nbytes(TensorInfo(t.name, t.ne, new)) for t, new in types)
        return QuantizeResult(out_path, {t.name: new.name for t, new in types}, size, opts.fallbacks)

    plan_rows = []
    for t, new in types:
        values = None
        if im is not None and new != t.type and t.name in im.entries:
            values = im.entries[t.name]
            if values.size != t.ne[0] and t.name in ("token_embd.weight", "per_layer_token_embd.weight"):
                values = None           # llama-quantize ignores a mismatched entry for the embedding table
        if values is None and new != t.type and requires_imatrix(t.name, new, p):
            hint = ("pass --imatrix FILE (compute one with `autoglm-gguf imatrix`)" if im is None else
                    "the importance matrix has no entry for it; was it computed on this model?")
            raise ConversionError(f"{qtype}: tensor {t.name} would be {new.name}, which needs an importance matrix: {hint}")
        plan_rows.append((t.name, new.name.lower(), values))

    kv: list[tuple[str, str | int]] = []
    if im is not None:
        kv.append((KV_IMATRIX_FILE, _truncate(str(imatrix))))
        if im.datasets:
            kv.append((KV_IMATRIX_DATASET, _truncate(im.datasets[0])))
        kv.append((KV_IMATRIX_ENTRIES, len(im.entries)))
        if im.chunk_count > 0:
            kv.append((KV_IMATRIX_CHUNKS, im.chunk_count))

    total_in = sum(_nbytes(t) for t, _ in types)
    with OutputSet([out_path], force=force) as out:
        with tqdm(total=total_in, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
                  file=sys.stderr, dynamic_ncols=True, desc=f"quantize {p.name}") as bar:
            def on_tensor(i: int, done: int) -> None:
                bar.update(done - bar.n)
                bar.set_postfix_str(f"{i + 1}/{len(types)} {types[i][0].name}", refresh=False)

            try:
                _core.requantize(str(in_path), str(out.temps[0]), plan_rows, p.ftype, kv, n_threads, on_tensor)
            except ValueError as e:
                raise ConversionError(str(e)) from e
            bar.update(total_in - bar.n)
        out.commit()
    return QuantizeResult(out_path, {t.name: new.name for t, new in types}, out_path.stat().st_size, opts.fallbacks)


def _nbytes(t: TensorInfo) -> int:
    blck, size = gguf.GGML_QUANT_SIZES[t.type]
    n = 1
    for d in t.ne:
        n *= d
    return n // blck * size
