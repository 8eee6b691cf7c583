"""Pieces shared by the text and mmproj writers: storage-type policy, file types, general.* metadata."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gguf

from .checkpoint import Checkpoint

T = gguf.GGMLQuantizationType
OUTTYPES = {"f32": T.F32, "f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q4_0": T.Q4_0}
FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
              "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}
# Row lengths that do not fit a type's blocks fall back along this chain (F16 has block size 1).
FALLBACK = {T.Q6_K: T.Q8_0, T.Q4_0: T.F16, T.Q8_0: T.F16}


def fit_type(qtype: gguf.GGMLQuantizationType, row_len: int) -> gguf.GGMLQuantizationType:
    while row_len % gguf.GGML_QUANT_SIZES[qtype][0] != 0:
        qtype = FALLBACK[qtype]
    return qtype


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
