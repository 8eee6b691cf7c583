"""Streaming reads from (possibly sharded) safetensors files, without torch.

The `safetensors` package cannot hand bf16 to numpy, and loading whole tensors would make peak
memory scale with the largest tensor (the 9B model's embedding is 1.2 GB in bf16). So we parse
the (simple, documented) header ourselves and map only the byte range of the rows being read;
each map is closed right after, so resident memory stays at one chunk.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConversionError

_DTYPES = {
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),  # converted to f32 by bit shifting
    "F64": (np.dtype("<f8"), 8),
}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes live. Reads return float32, C-contiguous."""

    name: str
    path: Path
    dtype: str          # safetensors dtype string: F32 / F16 / BF16 / F64
    shape: tuple[int, ...]
    offset: int         # absolute byte offset of the first element in the file
    nbytes: int

    @property
    def n_rows(self) -> int:
        return self.shape[0] if self.shape else 1

    def read_rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows [r0, r1) along axis 0 as float32 of shape (r1 - r0,) + shape[1:]."""
        np_dtype, itemsize = _DTYPES[self.dtype]
        per_row = int(np.prod(self.shape[1:], dtype=np.int64)) * itemsize if self.shape else itemsize
        start = self.offset + r0 * per_row
        length = (r1 - r0) * per_row
        out_shape = (r1 - r0,) + tuple(self.shape[1:]) if self.shape else ()
        if length == 0:
            return np.zeros(out_shape, dtype=np.float32)
        page = mmap.ALLOCATIONGRANULARITY
        aligned = start - start % page
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), length + (start - aligned), access=mmap.ACCESS_READ,
                                                  offset=aligned) as mm:
            raw = np.frombuffer(mm, dtype=np_dtype, count=length // itemsize, offset=start - aligned)
            if self.dtype == "BF16":
                out = (raw.astype(np.uint32) << 16).view(np.float32)
            else:
                out = raw.astype(np.float32)  # always a copy, so the map can close
            del raw
        return out.reshape(out_shape)

    def read(self) -> np.ndarray:
        return self.read_rows(0, self.n_rows) if self.shape else self.read_rows(0, 1).reshape(())


def read_header(path: Path) -> dict[str, TensorRef]:
    """Parse one safetensors file's header and check every tensor lies inside the file."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ConversionError(f"{path}: file is {size} bytes, too short to be a safetensors file (truncated?)")
            (hlen,) = struct.unpack("<Q", head)
            if hlen > _MAX_HEADER or 8 + hlen > size:
                raise ConversionError(f"{path}: header length {hlen} does not fit in a {size}-byte file "
                                      "(truncated or not a safetensors file)")
            header = json.loads(f.read(hlen))
    except OSError as e:
        raise ConversionError(f"cannot read {path}: {e.strerror or e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: header is not valid JSON ({e}); not a safetensors file?") from e

    if not isinstance(header, dict):
        raise ConversionError(f"{path}: the header is not a JSON object; not a safetensors file?")
    data_start = 8 + hlen
    refs: dict[str, TensorRef] = {}
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        refs[name] = ref = _tensor_ref(path, name, info, data_start, size)
        spans.append((ref.offset, ref.offset + ref.nbytes, name))
    # Tensors must not share bytes: an overlapping header is corrupt (or crafted), whatever it says.
    reach, last = -1, None  # the furthest end so far, and its tensor
    for b0, b1, b in sorted(s for s in spans if s[1] > s[0]):
        if last is not None and b0 < reach:
            raise ConversionError(f"{path}: tensors {last!r} and {b!r} overlap in the file (the first ends at "
                                  f"byte {reach}, the second starts at {b0}); the header is corrupt")
        if b1 > reach:
            reach, last = b1, b
    return refs


def _tensor_ref(path: Path, name: str, info, data_start: int, size: int) -> TensorRef:
    """One header entry, checked: dtype, shape and offsets are well-typed and lie inside the file."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict):
        raise ConversionError(f"{where}: header entry is not an object")
    dtype = info.get("dtype")
    if dtype not in _DTYPES:
        raise ConversionError(f"{where} has dtype {dtype}; supported: {', '.join(_DTYPES)}")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape) or len(shape) > 8:
        raise ConversionError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(x) for x in offsets):
        raise ConversionError(f"{where}: data_offsets {offsets!r} is not [begin, end]")
    shape_t = tuple(shape)
    b0, b1 = offsets
    expected = _DTYPES[dtype][1]
    for d in shape_t:
        expected *= d  # Python ints: no overflow, whatever the header claims
    if b1 < b0 or b1 - b0 != expected:
        raise ConversionError(f"{where} of shape {list(shape_t)} {dtype} should take {expected} bytes, "
                              f"header says {b1 - b0}")
    if data_start + b1 > size:
        raise ConversionError(
            f"{where} ends at byte {data_start + b1} but the file has only {size} bytes: "
            "the shard is truncated (incomplete download?). Download it again.")
    return TensorRef(name, path, dtype, shape_t, data_start + b0, b1 - b0)


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def open_checkpoint_tensors(model_dir: Path) -> dict[str, TensorRef]:
    """All tensors of a HF checkpoint directory: model.safetensors, or the shards its index names."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConversionError(f"{index}: cannot read the weight_map ({e})") from e
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ConversionError(f"{index}: weight_map must map tensor names to shard file names")
        shards = sorted(set(weight_map.values()))
        outside = [s for s in shards if Path(s).name != s or s in ("", ".", "..")]
        if outside:
            raise ConversionError(f"{index}: shard {outside[0]!r} is not a file name in the checkpoint directory; "
                                  "shards must sit beside the index (no directories, no '..')")
        missing = [s for s in shards if not (model_dir / s).is_file()]
        if missing:
            raise ConversionError(f"{model_dir}: shard(s) listed in {index.name} are missing: {', '.join(missing)}. "
                                  "Download the complete checkpoint.")
        refs: dict[str, TensorRef] = {}
        for shard in shards:
            refs.update(read_header(model_dir / shard))
        absent = [n for n, s in weight_map.items() if n not in refs]
        if absent:
            raise ConversionError(f"{index}: {len(absent)} tensor(s) named in the index are not in their shard, "
                                  f"e.g. {absent[0]!r} (expected in {weight_map[absent[0]]})")
        return refs
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ConversionError(f"{model_dir}: no *.safetensors files (and no model.safetensors.index.json). "
                              "Only safetensors checkpoints are supported.")
    refs = {}
    for f in files:
        refs.update(read_header(f))
    return refs
