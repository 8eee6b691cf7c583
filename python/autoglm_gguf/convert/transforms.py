"""Row sources for output tensors: reads from the checkpoint plus the few layout changes GGUF needs."""

from __future__ import annotations

import numpy as np

from .gguf_out import RowSource
from .safetensors_io import TensorRef


def rows_of(ref: TensorRef) -> RowSource:
    """The tensor as a 2-D (rows, last-dim) array, read lazily by row range."""
    inner = int(np.prod(ref.shape[1:-1], dtype=np.int64)) if len(ref.shape) > 2 else 1

    def src(r0: int, r1: int) -> np.ndarray:
        if len(ref.shape) <= 1:
            return ref.read().reshape(1, -1)
        # Output rows are rows of the flattened (prod(shape[:-1]), shape[-1]) view; read whole axis-0 slices.
        a0, a1 = r0 // inner, -(-r1 // inner)
        block = ref.read_rows(a0, a1).reshape(-1, ref.shape[-1])
        return block[r0 - a0 * inner: r1 - a0 * inner]
    return src


def neox_row_order(n_head: int, head_dim: int, n_rot: int) -> np.ndarray:
    """Row permutation turning interleaved rotary pairs (2j, 2j+1) into NeoX half-split pairs (j, j + n_rot/2)
    within the first n_rot dims of every head; dims >= n_rot keep their place.
    ref: spec A.3.3 (llama.cpp conversion/glm.py normal_to_neox). new row j <- old row order[j]."""
    head = np.concatenate([np.arange(0, n_rot, 2), np.arange(1, n_rot, 2), np.arange(n_rot, head_dim)])
    return (np.arange(n_head)[:, None] * head_dim + head[None, :]).reshape(-1)


def permuted_rows(ref: TensorRef, order: np.ndarray) -> RowSource:
    """Rows of `ref` (1-D: elements) in the given order. The permutation is local to a head, so each
    chunk reads only the contiguous span its rows come from."""
    def src(r0: int, r1: int) -> np.ndarray:
        if len(ref.shape) == 1:  # a bias: one output row holding every element
            return ref.read()[order].reshape(1, -1)
        idx = order[r0:r1]
        lo, hi = int(idx.min()), int(idx.max()) + 1
        return ref.read_rows(lo, hi)[idx - lo]
    return src


def temporal_slice(ref: TensorRef, t: int) -> RowSource:
    """Conv3d weight [out, C, T, kh, kw] -> the 2-D view of w[:, :, t] ([out*C*kh, kw])."""
    def src(r0: int, r1: int) -> np.ndarray:
        w = ref.read()[:, :, t]
        return np.ascontiguousarray(w).reshape(-1, w.shape[-1])[r0:r1]
    return src
