"""Streaming GGUF output: tensor data is produced, converted and written one row-chunk at a time.

Metadata and tensor infos are laid out by gguf-py's GGUFWriter (the format's reference writer).
Tensor bytes come from a small object exposing `nbytes` and `tofile()`, which GGUFWriter treats as an
array; it pulls float32 rows from the source in chunks of at most CHUNK_BYTES, converts them with
the native quantizer and writes them, so resident memory stays at a few chunks whatever the model
size. Files are written under a temporary name and renamed into place only when everything
succeeded (see OutputSet), so a failure never leaves a half-written model behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from .. import _core
from ..errors import ConversionError

CHUNK_BYTES = 64 << 20  # f32 bytes per conversion chunk

RowSource = Callable[[int, int], np.ndarray]   # (r0, r1) -> float32 rows, shape (r1 - r0, row_len)



@dataclass
class OutTensor:
    name: str
    shape: tuple[int, ...]             # numpy/torch order (slowest first); GGUF stores it reversed (ne)
    qtype: gguf.GGMLQuantizationType
    source: RowSource                  # rows of the 2-D view (prod(shape[:-1]), shape[-1])
    imatrix: np.ndarray | None = None  # per-column importance (mean squared activation) for the quantizer

    @property
    def n_rows(self) -> int:
        return int(np.prod(self.shape[:-1], dtype=np.int64)) if len(self.shape) > 1 else 1

    @property
    def row_len(self) -> int:
        return int(self.shape[-1])

    @property
    def nbytes(self) -> int:
        blck, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return self.n_rows * (self.row_len // blck) * size


def fits_blocks(row_len: int, qtype: gguf.GGMLQuantizationType) -> bool:
    return row_len % gguf.GGML_QUANT_SIZES[qtype][0] == 0


class _StreamedTensor:
    """Duck-types the part of numpy.ndarray that GGUFWriter.write_tensor_data uses."""

    def __init__(self, t: OutTensor, n_threads: int, on_bytes: Callable[[int], None]):
        self.t, self.n_threads, self.on_bytes = t, n_threads, on_bytes
        self.nbytes = t.nbytes

    def tofile(self, f) -> None:
        t = self.t
        qname = t.qtype.name.lower()
        rows_per_chunk = max(1, CHUNK_BYTES // (4 * t.row_len))
        written = 0
        for r0 in range(0, t.n_rows, rows_per_chunk):
            r1 = min(t.n_rows, r0 + rows_per_chunk)
            x = np.ascontiguousarray(t.source(r0, r1), dtype=np.float32).reshape(r1 - r0, t.row_len)
            try:
                q = _core.quantize(x, qname, self.n_threads, t.imatrix)
            except ValueError as e:
                raise ConversionError(f"tensor {t.name}: {e} (rows {r0}..{r1})") from e
            f.write(memoryview(q).cast("B"))
            written += q.nbytes
            self.on_bytes(q.nbytes)
        if written != self.nbytes:
            raise ConversionError(f"tensor {t.name}: wrote {written} bytes, expected {self.nbytes} (internal error)")


@dataclass
class GGUFPlan:
    """Everything one output file will contain: metadata callbacks and tensors in file order."""

    path: Path
    arch: str
    metadata: Callable[[gguf.GGUFWriter], None]
    tensors: list[OutTensor]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


class OutputSet:
    """Creates all outputs under temporary names in their target directories; `commit()` renames
    them into place together, and leaving the `with` block without commit removes them."""

    def __init__(self, targets: Sequence[Path], force: bool):
        self.targets = [Path(p) for p in targets]
        for p in self.targets:
            if p.exists() and not force:
                raise ConversionError(f"{p} already exists; choose another output path or pass --force to overwrite it")
            if not p.parent.is_dir():
                raise ConversionError(f"{p.parent}: output directory does not exist")
            if not os.access(p.parent, os.W_OK):
                raise ConversionError(f"{p.parent}: output directory is not writable")
        self.temps: list[Path] = []

    def __enter__(self) -> OutputSet:
        umask = os.umask(0)
        os.umask(umask)
        for p in self.targets:
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".partial", dir=p.parent)
            os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; the model files are ordinary files
            os.close(fd)
            self.temps.append(Path(tmp))
        return self

    def commit(self) -> None:
        for tmp, p in zip(self.temps, self.targets):
            os.replace(tmp, p)
        self.temps = []

    def __exit__(self, *exc) -> None:
        for tmp in self.temps:
            tmp.unlink(missing_ok=True)


def write_gguf(plan: GGUFPlan, tmp_path: Path, n_threads: int, on_bytes: Callable[[int], None],
               on_tensor: Callable[[OutTensor], None] | None = None) -> None:
    w = gguf.GGUFWriter(tmp_path, plan.arch)
    try:
        plan.metadata(w)
        for t in plan.tensors:
            w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for t in plan.tensors:
            if on_tensor:
                on_tensor(t)
            w.write_tensor_data(_StreamedTensor(t, n_threads, on_bytes))  # type: ignore[arg-type]
        w.flush()
    finally:
        w.close()
