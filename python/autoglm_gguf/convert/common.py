"""Pieces shared by the text and mmproj writers: storage-type policy, file types, general.* metadata."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gguf

from ..quant_mix import PRESETS
from .checkpoint import Checkpoint

T = gguf.GGMLQuantizationType
# Text --outtype: llama-quantize's presets (quant_mix.PRESETS), the per-tensor mix included.
OUTTYPES = {name: p.default for name, p in PRESETS.items()}
FILE_TYPES = {name: p.ftype for name, p in PRESETS.items()}


def sorted_like_llamacpp(refs):
    """llama.cpp writes tensors shard by shard (sorted shard names), each shard's tensors sorted by HF name.
    Following the same order keeps files comparable tensor by tensor and reads each shard sequentially."""
    return sorted(refs, key=lambda r: (str(r.path), r.name))


def add_general_metadata(w: gguf.GGUFWriter, ckpt: Checkpoint, gguf_type: str, total_params: int) -> None:
    """general.type, general.sampling.* and the naming keys, derived exactly as llama.cpp's converter does
    (gguf-py's Metadata: README front matter, config _name_or_path, directory name, generation_config)."""
    meta = gguf.Metadata.load(None, ckpt.path, None, total_params)
    gen = ckpt.generation_config
    if meta.sampling_penalty_repeat is None and "repetition_penalty" in gen:
        meta.sampling_penalty_repeat = gen["repetition_penalty"]  # newer gguf-py also reads this alias
    if meta.name is None:
        meta.name = ckpt.path.resolve().name
    if meta.size_label is None and total_params > 0:
        meta.size_label = gguf.size_label(total_params, 0, 0, 0)
    w.add_type(gguf_type)
    meta.set_gguf_meta_model(w)


def n_params(shapes) -> int:
    return sum(math.prod(s) for s in shapes)


def processor_settings(ckpt: Checkpoint) -> dict:
    """preprocessor_config.json, overridden by processor_config.json's image_processor section (as llama.cpp)."""
    settings = dict(ckpt.preprocessor_config)
    proc = ckpt.path / "processor_config.json"
    if proc.is_file():
        try:
            data = json.loads(Path(proc).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        settings.update(data.get("image_processor", {}) if isinstance(data.get("image_processor"), dict) else {})
    return settings
