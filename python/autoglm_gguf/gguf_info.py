"""Summaries of GGUF files (text model or mmproj) for `autoglm-gguf info`."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import gguf

from .errors import GGUFFileError

# Keys shown for each architecture, without the "<arch>." prefix.
_TEXT_KEYS = ("context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
              "attention.head_count_kv", "rope.dimension_count", "rope.dimension_sections", "rope.freq_base",
              "attention.layer_norm_rms_epsilon")
_CLIP_KEYS = ("clip.projector_type", "clip.vision.embedding_length", "clip.vision.block_count",
              "clip.vision.attention.head_count", "clip.vision.patch_size", "clip.vision.image_size",
              "clip.vision.projection_dim", "clip.vision.feed_forward_length", "clip.vision.spatial_merge_size")


def field_value(field: gguf.ReaderField) -> Any:
    """A metadata field as a plain Python value (str, int, float, bool or list of those)."""
    if not field.types:
        return None
    t0 = field.types[0]
    if t0 == gguf.GGUFValueType.ARRAY:
        sub = field.types[-1]
        items = [field.parts[i] for i in field.data]
        if sub == gguf.GGUFValueType.STRING:
            return [bytes(x).decode("utf-8", errors="replace") for x in items]
        return [x.tolist()[0] for x in items]
    part = field.parts[field.data[0]]
    if t0 == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8", errors="replace")
    v = part.tolist()[0]
    return bool(v) if t0 == gguf.GGUFValueType.BOOL else v


def open_reader(path: str | Path) -> gguf.GGUFReader:
    path = Path(path)
    if not path.is_file():
        raise GGUFFileError(f"{path}: no such file")
    from .gguf_bounds import check_header_bounds

    check_header_bounds(path)  # gguf-py trusts counts; a lying one would make it loop for hours
    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # gguf-py raises ValueError/struct errors/etc. on malformed files
        raise GGUFFileError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from e


def summarize(path: str | Path) -> dict[str, Any]:
    r = open_reader(path)
    kv = {name: field_value(f) for name, f in r.fields.items() if not name.startswith("GGUF.")}
    arch = kv.get("general.architecture", "?")
    types = Counter(t.tensor_type.name for t in r.tensors)
    out: dict[str, Any] = {
        "path": str(path),
        "file_size": os.path.getsize(path),
        "architecture": arch,
        "type": kv.get("general.type"),
        "name": kv.get("general.name"),
        "file_type": kv.get("general.file_type"),
        "tensor_count": len(r.tensors),
        "tensor_types": dict(sorted(types.items())),
        "parameters": int(sum(int(t.n_elements) for t in r.tensors)),
        "metadata_count": len(kv),
    }
    if arch == "clip":
        out["projector_type"] = kv.get("clip.projector_type")
        out["hparams"] = {k: kv[k] for k in _CLIP_KEYS if k in kv}
    else:
        out["hparams"] = {k: kv[f"{arch}.{k}"] for k in _TEXT_KEYS if f"{arch}.{k}" in kv}
        tokens = kv.get("tokenizer.ggml.tokens")
        if tokens is not None:
            out["vocab_size"] = len(tokens)
            out["tokenizer"] = {"model": kv.get("tokenizer.ggml.model"), "pre": kv.get("tokenizer.ggml.pre"),
                                "has_chat_template": "tokenizer.chat_template" in kv}
    out["autoglm"] = {k: v for k, v in kv.items() if k.startswith("autoglm.")}
    return out


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"{s['path']}",
             f"  architecture   {s['architecture']}" + (f" ({s['type']})" if s.get("type") else ""),
             f"  name           {s.get('name')}",
             f"  file size      {s['file_size'] / 2**20:.1f} MiB",
             f"  parameters     {s['parameters']:,}",
             f"  tensors        {s['tensor_count']}  (" + ", ".join(f"{k}: {v}" for k, v in s["tensor_types"].items()) + ")"]
    if s.get("projector_type"):
        lines.append(f"  projector      {s['projector_type']}")
    for k, v in s["hparams"].items():
        lines.append(f"  {k:<40} {v}")
    if "vocab_size" in s:
        lines.append(f"  {'vocab':<40} {s['vocab_size']} ({s['tokenizer']['model']}, pre={s['tokenizer']['pre']}, "
                     f"chat template: {'yes' if s['tokenizer']['has_chat_template'] else 'no'})")
    for k, v in s["autoglm"].items():
        lines.append(f"  {k:<40} {v}")
    return "\n".join(lines)
