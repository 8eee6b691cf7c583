"""Structure-aware mutations of GGUF files.

A GGUF file is walked once (ref: ggml/docs/gguf.md) and the byte position of every field a parser
trusts is recorded: the header counts, each string's length, each key-value's type id, each array's
element type and count, each scalar value, each tensor's dimension count, dimensions, type and data
offset. A mutation overwrites one such field in place (same width, so everything after it stays where
it was) with a value chosen to break an assumption: zero, one, the maximum, a neighbouring valid
value, an invalid type id, NaN/inf for floats. Some mutations cut the file short or flip random bytes
of the tensor data instead. Everything is driven by a seeded random.Random, so a case is reproducible
from (seed file, case number).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

# GGUF value types and their widths (8 = string, 9 = array)
SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


@dataclass
class Field:
    kind: str      # header_count | str_len | kv_type | arr_type | arr_count | value | n_dims | dim | ggml_type | offset
    pos: int
    fmt: str       # struct format of the field
    label: str     # what it is, for reports ("key glm4.block_count", "tensor blk.0.attn_q.weight dim 1")


class GGUFLayout:
    """The positions of a well-formed GGUF file's fields."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.fields = data, 0, []
        self.tensor_data_start = 0
        self._walk()

    def _take(self, fmt: str, kind: str | None = None, label: str = ""):
        if kind:
            self.fields.append(Field(kind, self.pos, fmt, label))
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def _string(self, label: str) -> str:
        n = self._take("<Q", "str_len", label)
        s = self.data[self.pos:self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return s

    def _value(self, vtype: int, label: str) -> None:
        if vtype in SCALAR:
            self._take(SCALAR[vtype], "value", label)
        elif vtype == STRING:
            self._string(label)
        elif vtype == ARRAY:
            etype = self._take("<I", "arr_type", label)
            count = self._take("<Q", "arr_count", label)
            if etype in SCALAR:
                width = struct.calcsize(SCALAR[etype])
                for i in range(min(count, 4)):  # a few elements are enough to target
                    self.fields.append(Field("value", self.pos + i * width, SCALAR[etype], f"{label}[{i}]"))
                self.pos += count * width
            else:
                for i in range(count):
                    self._value(etype, f"{label}[{i}]")
        else:
            raise ValueError(f"unknown GGUF value type {vtype}")

    def _walk(self) -> None:
        assert self.data[:4] == b"GGUF", "not a GGUF file"
        self.pos = 4
        self.version = self._take("<I")
        n_tensors = self._take("<Q", "header_count", "tensor count")
        n_kv = self._take("<Q", "header_count", "metadata count")
        alignment = 32
        for _ in range(n_kv):
            key = self._string("key name")
            vtype = self._take("<I", "kv_type", f"key {key}")
            before = self.pos
            self._value(vtype, f"key {key}")
            if key == "general.alignment" and vtype == 4:
                (alignment,) = struct.unpack_from("<I", self.data, before)
        for _ in range(n_tensors):
            name = self._string("tensor name")
            n_dims = self._take("<I", "n_dims", f"tensor {name} n_dims")
            for d in range(n_dims):
                self._take("<Q", "dim", f"tensor {name} dim {d}")
            self._take("<I", "ggml_type", f"tensor {name} type")
            self._take("<Q", "offset", f"tensor {name} offset")
        self.tensor_data_start = (self.pos + alignment - 1) // alignment * alignment


_INTERESTING_U = [0, 1, 2, 3, 7, 255, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**64 - 1]
_INTERESTING_S = [0, 1, -1, -2, 2**31 - 1, -2**31, 2**63 - 1, -2**63]
_INTERESTING_F = [0.0, -0.0, -1.0, 1e-30, 1e30, float("nan"), float("inf"), float("-inf"), 3.4e38]


def _fits(fmt: str, v) -> bool:
    try:
        struct.pack(fmt, v)
        return True
    except (struct.error, OverflowError):
        return False


def _new_value(rng: random.Random, f: Field, data: bytes):
    (old,) = struct.unpack_from(f.fmt, data, f.pos)
    if f.fmt in ("<f", "<d"):
        return rng.choice(_INTERESTING_F + [old * rng.choice([-1, 0.5, 2, 1e6])])
    if f.kind in ("kv_type", "arr_type"):
        return rng.choice([*range(13), 13, 99, 2**32 - 1])
    if f.kind == "ggml_type":
        return rng.choice([*range(0, 42), 4, 5, 99, 2**31])  # includes removed (4, 5) and unknown ids
    if f.kind == "n_dims":
        return rng.choice([0, 1, 2, 3, 4, 5, 8, 2**32 - 1])
    signed = f.fmt[1].islower() and f.fmt[1] != "?"
    pool = _INTERESTING_S if signed else _INTERESTING_U
    near = [old + d for d in (-2, -1, 1, 2)] + [old * 2, old // 2]
    return rng.choice(pool + near)


def mutate(data: bytes, layout: GGUFLayout, rng: random.Random) -> tuple[bytes, str]:
    """One mutated copy of `data` and a description of what was changed."""
    roll = rng.random()
    if roll < 0.06:
        cut = rng.randrange(0, len(data))
        return data[:cut], f"truncated to {cut} of {len(data)} bytes"
    if roll < 0.12 and len(data) > layout.tensor_data_start + 16:
        out = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(layout.tensor_data_start, len(data))
            out[i] = rng.randrange(256)
        return bytes(out), "random bytes of the tensor data changed"
    if roll < 0.16:
        out = bytearray(data)
        i = rng.randrange(0, min(len(data), layout.tensor_data_start))
        out[i] ^= 1 << rng.randrange(8)
        return bytes(out), f"bit flipped in the header at byte {i}"
    f = rng.choice(layout.fields)
    for _ in range(8):
        v = _new_value(rng, f, data)
        if _fits(f.fmt, v):
            break
    else:
        v = 0
    out = bytearray(data)
    struct.pack_into(f.fmt, out, f.pos, v)
    return bytes(out), f"{f.kind} of {f.label} set to {v!r}"
