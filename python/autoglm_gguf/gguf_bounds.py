"""A bounds check of a GGUF file's header before the `gguf` package reads it.

gguf-py trusts the counts in a file: an array that claims 2^32-1 elements makes it loop (or allocate)
for as long as that takes, long before it notices the file is 400 bytes. This walk reads the same
layout (ref: ggml/docs/gguf.md: magic, version, tensor and key-value counts, the key-value pairs,
then the tensor infos) with every count and length checked against the bytes that remain, so a lying
header is a GGUFFileError naming the key and the claim.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from .errors import GGUFFileError

_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 8
_MAX_ARRAY_DEPTH = 4


class _Walker:
    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.path, self.size = buf, 0, path, len(buf)

    def fail(self, what: str) -> GGUFFileError:
        return GGUFFileError(f"{self.path}: not a readable GGUF file: {what} (at byte {self.pos} of {self.size}); "
                             "the file is corrupt or truncated")

    def take(self, fmt: str):
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise self.fail(f"header ends early: need {n} more bytes")
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v[0] if len(v) == 1 else v

    def skip(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"{what} claims {n} bytes, more than the file has left")
        self.pos += n

    def string(self, what: str) -> bytes:
        n = self.take("<Q")
        start = self.pos
        self.skip(n, what)
        return bytes(self.buf[start:self.pos])

    def value(self, vtype: int, key: str, depth: int = 0) -> None:
        if vtype in _SCALAR_SIZES:
            self.skip(_SCALAR_SIZES[vtype], f"value of {key}")
        elif vtype == _STRING:
            self.string(f"string value of {key}")
        elif vtype == _ARRAY:
            if depth >= _MAX_ARRAY_DEPTH:
                raise self.fail(f"{key}: arrays nested more than {_MAX_ARRAY_DEPTH} deep")
            etype, count = self.take("<I"), self.take("<Q")
            left = self.size - self.pos
            if etype in _SCALAR_SIZES:
                if count * _SCALAR_SIZES[etype] > left:
                    raise self.fail(f"{key}: array of {count} elements of type {etype} does not fit in the "
                                    f"{left} bytes left")
                self.pos += count * _SCALAR_SIZES[etype]
            elif etype in (_STRING, _ARRAY):
                if count * 8 > left:  # each element has at least a 64-bit length or count
                    raise self.fail(f"{key}: array of {count} strings/arrays does not fit in the {left} bytes left")
                for _ in range(count):
                    self.value(etype, key, depth + 1)
            else:
                raise self.fail(f"{key}: array element type {etype} is not a GGUF type")
        else:
            raise self.fail(f"{key}: value type {vtype} is not a GGUF type")


def check_header_bounds(path: str | Path) -> None:
    """Raise GGUFFileError if any count or length in the header exceeds what the file holds."""
    path = Path(path)
    with open(path, "rb") as f:
        if path.stat().st_size < 24:
            raise GGUFFileError(f"{path}: not a readable GGUF file: {path.stat().st_size} bytes is too short")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            w = _Walker(buf, path)
            if w.take("<4s") != b"GGUF":
                raise GGUFFileError(f"{path}: not a readable GGUF file: no GGUF magic")
            version = w.take("<I")
            if version not in (2, 3):
                raise GGUFFileError(f"{path}: not a readable GGUF file: GGUF version {version} is not supported (2 or 3)")
            n_tensors, n_kv = w.take("<Q"), w.take("<Q")
            left = w.size - w.pos
            if n_kv * 13 > left or n_tensors * 28 > left:  # smallest possible pair / tensor info
                raise w.fail(f"the header claims {n_kv} metadata pairs and {n_tensors} tensors, more than "
                             f"{left} bytes can hold")
            for i in range(n_kv):
                key = w.string(f"metadata key {i}").decode("utf-8", "replace")
                w.value(w.take("<I"), key)
            for i in range(n_tensors):
                name = w.string(f"tensor name {i}").decode("utf-8", "replace")
                n_dims = w.take("<I")
                if n_dims > _MAX_DIMS:
                    raise w.fail(f"tensor {name}: {n_dims} dimensions (at most {_MAX_DIMS})")
                w.skip(8 * n_dims + 4 + 8, f"tensor {name}'s shape, type and offset")
