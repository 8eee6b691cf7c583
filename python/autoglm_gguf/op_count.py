"""Arithmetic operations of a workload, counted from a GGUF's tensor shapes (a multiply-add = 2), so a
benchmark can state GOP/s and its share of the machine's peak (`_core.cpu_peak`).

Counted: every matrix product with a weight, and attention's two products (q.k and p.v). Not counted:
norms, activations, RoPE, softmax, the token embedding's row lookups (a few percent at most). The
peak family is that of the weights holding most of the work: quantized weights run against int8
activations ("int8"), BF16 ones on "bf16", F16/F32 ones on "f32"; `dtype` names the type holding most of
it, for the benchmark to ask which kernels (AMX tiles or not) run it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader

_FLOAT = {GGMLQuantizationType.F32: "f32", GGMLQuantizationType.F16: "f32", GGMLQuantizationType.BF16: "bf16"}


@dataclass
class Work:
    ops: float    # arithmetic operations
    family: str   # "f32", "bf16" or "int8": which peak applies
    dtype: str = ""  # the weight type holding most of the work ("q4_0", "f16", ...)


def _matrices(reader: GGUFReader, prefix: str) -> list[tuple[int, str, str]]:
    """(elements, family, type name) of each weight matrix whose name starts with prefix."""
    out = []
    for t in reader.tensors:
        if (t.name.startswith(prefix) and t.name.endswith(".weight") and "position_embd" not in t.name
                and len([d for d in t.shape if d > 1]) >= 2):
            out.append((int(np.prod(t.shape)), _FLOAT.get(t.tensor_type, "int8"), t.tensor_type.name.lower()))
    return out


def _most(mats: list[tuple[int, str, str]], key: int, default: str) -> str:
    by: dict[str, int] = {}
    for m in mats:
        by[m[key]] = by.get(m[key], 0) + m[0]
    return max(by, key=by.get) if by else default


def _family(mats: list[tuple[int, str, str]]) -> str:
    return _most(mats, 1, "f32")


def _field(reader: GGUFReader, key: str) -> int:
    f = reader.get_field(key)
    if f is None:
        raise KeyError(key)
    return int(f.parts[f.data[0]][0])


def text_prefill(path: str, n_tokens: int) -> Work:
    """A prompt of n_tokens from an empty context, logits for the last position only."""
    r = GGUFReader(path)
    arch = "glm4"
    mats = _matrices(r, "blk.")
    n_head, n_layer = _field(r, f"{arch}.attention.head_count"), _field(r, f"{arch}.block_count")
    head_dim = _field(r, f"{arch}.embedding_length") // n_head
    ops = 2.0 * n_tokens * sum(m[0] for m in mats)
    ops += 2.0 * 2 * head_dim * n_head * n_layer * n_tokens * (n_tokens + 1) / 2  # causal: position i sees i keys
    ops += 2.0 * sum(m[0] for m in _matrices(r, "output."))  # the last position's logits
    return Work(ops, _family(mats), _most(mats, 2, ""))


def vision_encode(path: str, n_patches: int) -> Work:
    """One image of n_patches patches (before the 2x2 merge) through the ViT and the merger."""
    r = GGUFReader(path)
    vit = _matrices(r, "v.blk.")
    merger = _matrices(r, "mm.")
    width, n_layer = _field(r, "clip.vision.embedding_length"), _field(r, "clip.vision.block_count")
    merge = 2
    ops = 2.0 * n_patches * sum(m[0] for m in vit)
    ops += 4.0 * n_patches * n_patches * width * n_layer  # full attention within the image: q.k and p.v
    ops += 2.0 * (n_patches / merge**2) * sum(m[0] for m in merger)
    ops += 2.0 * n_patches * sum(m[0] for m in _matrices(r, "v.patch_embd."))  # the two time slices summed into one (.weight.1 is not matched)
    return Work(ops, _family(vit + merger), _most(vit + merger, 2, ""))


def share_of_peak(work: Work, seconds: float, peak: dict) -> tuple[float, float]:
    """(achieved GOP/s, share of the peak of work.family) for work done in `seconds`."""
    gops = work.ops / seconds / 1e9
    p = float(peak.get(f"{work.family}_gops", 0.0))
    return gops, (gops / p if p > 0 else float("nan"))


def decode_weight_bytes(path: str) -> int:
    """Bytes of weights one decode step reads from a text GGUF: every tensor but the token embedding table,
    of which it reads one row (unless the output head is tied to it and reads it all)."""
    tensors = GGUFReader(path).tensors
    tied = not any(t.name == "output.weight" for t in tensors)
    return sum(int(t.n_bytes) for t in tensors if tied or t.name != "token_embd.weight")
