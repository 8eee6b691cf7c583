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

from autoglm_gguf.errors import ConversionError

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

    data_start = 8 + hlen
    refs: dict[str, TensorRef] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info.get("dtype")
        if dtype not in _DTYPES:
            raise ConversionError(f"{path}: tensor {name!r} has dtype {dtype}; supported: {', '.join(_DTYPES)}")
        shape = tuple(int(d) for d in info["shape"])
        b0, b1 = (int(x) for x in info["data_offsets"])
        expected = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype][1]
        if b1 - b0 != expected:
            raise ConversionError(f"{path}: tensor {name!r} of shape {list(shape)} {dtype} should take {expected} bytes, "
                                  f"header says {b1 - b0}")
        if data_start + b1 > size:
            raise ConversionError(
                f"{path}: tensor {name!r} ends at byte {data_start + b1} but the file has only {size} bytes: "
                "the shard is truncated (incomplete download?). Download it again.")
        refs[name] = TensorRef(name, path, dtype, shape, data_start + b0, b1 - b0)
    return refs


def open_checkpoint_tensors(model_dir: Path) -> dict[str, TensorRef]:
    """All tensors of a HF checkpoint directory: model.safetensors, or the shards its index names."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as e:
            raise ConversionError(f"{index}: cannot read the weight_map ({e})") from e
        shards = sorted(set(weight_map.values()))
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
