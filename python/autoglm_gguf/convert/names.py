"""GGUF keys and tensor names, taken from the runtime's own table (native/src/arch.h, exposed as
``_core.gguf_names()``): the converter writes exactly the names the loaders read, and a name is spelled
once. The HF -> GGUF maps in text_gguf.py and mmproj_gguf.py name table entries, not strings."""

from __future__ import annotations

from types import SimpleNamespace

from .. import _core

_TABLE = _core.gguf_names()

TEXT_ARCH: str = _TABLE["text_arch"]
VISION_ARCH: str = _TABLE["vision_arch"]
VISION_PROJECTOR: str = _TABLE["vision_projector"]

# KEY.CLIP_PATCH_SIZE == "clip.vision.patch_size", ...
KEY = SimpleNamespace(**_TABLE["keys"])


def tensor_name(entry: str, block: int | str | None = None) -> str:
    """The GGUF name of table entry ``entry`` ("ATTN_Q", "V_FFN_UP", ...); per-block entries need the
    block index: ``tensor_name("ATTN_Q", 3) == "blk.3.attn_q.weight"``."""
    fmt = _TABLE["tensors"][entry]
    if ("%d" in fmt) != (block is not None):
        raise ValueError(f"tensor {entry} ({fmt}) {'needs' if block is None else 'takes no'} block index")
    return fmt.replace("%d", str(int(block))) if block is not None else fmt
