"""Random weight values for the synthetic checkpoints and GGUFs (checkpoint.py, bench/make_synthetic).

Each tensor gets values from a 65536-entry table of normal quantiles (scaled/shifted per kind: see
checkpoint.py's module notes), indexed by a generator seeded from (seed, tensor name): streamed in
bounded chunks for the safetensors writer, or addressable by row blocks for GGUF synthesis.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from statistics import NormalDist

import numpy as np

_NORM_STD = 0.1
_LM_HEAD_GAIN = 4.0  # lm_head std = 4 * weight_std: logits std ~6 for the tiny model, clear greedy margins
_BIAS_STD_FACTOR = 0.5
_CHUNK_ELEMS = 4 << 20  # elements generated per step (8 MB of uint16 indices + <=16 MB of output)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 array -> uint16 bfloat16 bit patterns, round-to-nearest-even (NaN stays NaN)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32)
    r = u >> 16
    r &= 1
    r += 0x7FFF
    r += u
    r >>= 16
    out = r.astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = ((u[nan] >> 16) | 0x0040).astype(np.uint16)  # keep sign, force quiet NaN
    return out


@functools.lru_cache(maxsize=1)
def _normal_quantiles() -> np.ndarray:
    nd = NormalDist()
    return np.array([nd.inv_cdf((i + 0.5) / 65536.0) for i in range(65536)], dtype=np.float64)


@functools.lru_cache(maxsize=32)
def _value_table(mean: float, std: float, dtype: str) -> np.ndarray:
    """65536-entry lookup table of ``mean + std * z`` in the output encoding."""
    vals = (mean + std * _normal_quantiles()).astype(np.float32)
    if dtype == "bf16":
        tab = f32_to_bf16_bits(vals)
    elif dtype == "f16":
        tab = vals.astype("<f2")
    else:
        tab = vals.astype("<f4")
    tab.setflags(write=False)
    return tab


def _tensor_rng(seed: int, name: str) -> np.random.Generator:
    h = hashlib.blake2b(name.encode(), digest_size=8).digest()
    lo, hi = struct.unpack("<II", h)
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, lo, hi])


def _mean_std(name: str, kind: str, weight_std: float) -> tuple[float, float]:
    if kind == "w":
        return 0.0, weight_std * (_LM_HEAD_GAIN if name == "lm_head.weight" else 1.0)
    if kind == "norm":
        return 1.0, _NORM_STD
    return 0.0, _BIAS_STD_FACTOR * weight_std


_ROW_BLOCK = 64  # random_rows draws rows in blocks of this many, each block from its own generator


def random_rows(name: str, shape: tuple[int, ...], kind: str, r0: int, r1: int, *, seed: int = 0,
                weight_std: float = 0.02, zero_rows_from: int | None = None) -> np.ndarray:
    """Rows [r0, r1) (axis 0) of a random tensor as float32, addressable in any order and chunking:
    block b of 64 rows comes from a generator seeded with (seed, name, b). The same value model as
    the checkpoint writer (by kind), though not the same values. For writing models straight to GGUF
    (bench/make_synthetic.py) without materializing a checkpoint."""
    mean, std = _mean_std(name, kind, weight_std)
    table = _value_table(float(mean), float(std), "f32")
    row = math.prod(shape[1:]) if len(shape) > 1 else 1
    out = np.empty((r1 - r0) * row, dtype=np.float32)
    b0, b1 = r0 // _ROW_BLOCK, (r1 + _ROW_BLOCK - 1) // _ROW_BLOCK
    for b in range(b0, b1):
        lo, hi = b * _ROW_BLOCK, min((b + 1) * _ROW_BLOCK, shape[0] if shape else 1)
        rng = _tensor_rng(seed, f"{name}#{b}")
        vals = table[rng.integers(0, 65536, size=(hi - lo) * row, dtype=np.uint16)]
        a, z = max(lo, r0), min(hi, r1)
        out[(a - r0) * row:(z - r0) * row] = vals[(a - lo) * row:(z - lo) * row]
    if zero_rows_from is not None and r1 > zero_rows_from:
        out[max(0, zero_rows_from - r0) * row:] = 0
    return out.reshape((r1 - r0,) + tuple(shape[1:]))


def iter_tensor_chunks(name, shape, kind, *, seed, dtype, weight_std, zero_rows_from=None):
    """Yield the tensor's bytes (as numpy arrays in the output encoding) in bounded chunks.

    Rows ``>= zero_rows_from`` (of a 2-D tensor) are zeroed after drawing, so the other rows do
    not depend on it."""
    mean, std = _mean_std(name, kind, weight_std)
    table = _value_table(float(mean), float(std), dtype)
    rng = _tensor_rng(seed, name)
    n = math.prod(shape)
    step = _CHUNK_ELEMS
    if len(shape) > 1:  # whole rows per chunk
        row = math.prod(shape[1:])
        step = max(1, _CHUNK_ELEMS // row) * row
    zero_from = n if zero_rows_from is None else min(n, int(zero_rows_from) * math.prod(shape[1:]))
    done = 0
    while done < n:
        k = min(step, n - done)
        idx = rng.integers(0, 65536, size=k, dtype=np.uint16)
        vals = table[idx]
        if done + k > zero_from:
            vals[max(0, zero_from - done) :] = 0
        yield vals
        done += k
