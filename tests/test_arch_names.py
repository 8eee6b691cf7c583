"""One table of GGUF names (native/src/arch.h): the converter writes what the loaders read."""

from __future__ import annotations

import re

import gguf

from autoglm_gguf import _core
from autoglm_gguf.convert import names


def _pattern(fmt: str) -> re.Pattern[str]:
    return re.compile(re.escape(fmt).replace("%d", r"\d+") + r"\Z")


def test_table_is_one_to_one():
    table = _core.gguf_names()
    for kind in ("keys", "tensors"):
        strings = list(table[kind].values())
        assert len(strings) == len(set(strings)), f"a {kind} string appears twice"
    assert names.tensor_name("ATTN_Q", 3) == "blk.3.attn_q.weight"
    assert names.tensor_name("V_FFN_DOWN", 0) == "v.blk.0.ffn_down.weight"
    assert names.KEY.CLIP_PATCH_SIZE == "clip.vision.patch_size"


def test_every_converted_tensor_is_a_table_entry(tiny_checkpoint, alt_checkpoint, convert_tiny):
    patterns = [_pattern(f) for f in _core.gguf_names()["tensors"].values()]
    ours = set(_core.gguf_names()["keys"].values())
    for ckpt in (tiny_checkpoint, alt_checkpoint):
        for path in convert_tiny(ckpt, "f32", "f32"):
            r = gguf.GGUFReader(path)
            unknown = [t.name for t in r.tensors if not any(p.match(t.name) for p in patterns)]
            assert not unknown, f"{path.name}: tensors not in arch.h: {unknown}"
            # every key of ours the file holds is spelled as the table spells it
            for key in r.fields:
                if key.startswith(("autoglm.", "clip.")):
                    assert key in ours, f"{path.name}: key {key} is not in arch.h"
