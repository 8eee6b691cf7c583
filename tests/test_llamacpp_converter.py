"""Our converter's files match llama.cpp's converter (same pinned sdist) key by key and tensor by tensor.

Deliberate differences (documented in README "Converter"):
* our files add keys under the `autoglm.` prefix (end-of-generation ids, image pixel budget, ...);
* q4_0 is not compared: llama.cpp's HF converter cannot write it (that takes llama-quantize).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

from autoglm_gguf.gguf_info import field_value

TEXT_TYPES = ["f32", "f16", "bf16", "q8_0"]
MMPROJ_TYPES = ["f32", "f16", "q8_0"]
OURS_ONLY_PREFIX = "autoglm."


ALT_TYPES = ["f32", "q8_0"]

pytestmark = pytest.mark.llamacpp


@pytest.fixture(scope="module")
def llamacpp_outputs(llamacpp_converter, tiny_checkpoint, alt_checkpoint, tmp_path_factory) -> dict[tuple, Path]:
    """llama.cpp's conversions of both tiny checkpoints, keyed (checkpoint, file kind, outtype)."""
    out = tmp_path_factory.mktemp("llamacpp-conv")
    jobs, paths = [], {}
    for ckpt, kind, types in ((tiny_checkpoint, "text", TEXT_TYPES), (tiny_checkpoint, "mmproj", MMPROJ_TYPES),
                              (alt_checkpoint, "text", ALT_TYPES), (alt_checkpoint, "mmproj", ALT_TYPES)):
        for t in types:
            path = paths[(ckpt.name, kind, t)] = out / f"{ckpt.name}-{kind}-{t}.gguf"
            jobs.append([str(ckpt), "--outtype", t, "--outfile", str(path)] + (["--mmproj"] if kind == "mmproj" else []))
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("_llamacpp_convert.py")),
                           str(llamacpp_converter), json.dumps(jobs)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return paths


def kv_items(path: Path) -> list[tuple[str, list, object]]:
    r = GGUFReader(path)
    return [(name, [int(t) for t in f.types], field_value(f)) for name, f in r.fields.items()
            if not name.startswith("GGUF.")]


def tensor_items(path: Path):
    return [(t.name, t.tensor_type.name, [int(x) for x in t.shape], np.asarray(t.data).tobytes())
            for t in GGUFReader(path).tensors]


def assert_same_file(ours: Path, theirs: Path) -> None:
    our_kv = [kv for kv in kv_items(ours) if not kv[0].startswith(OURS_ONLY_PREFIX)]
    their_kv = kv_items(theirs)
    assert [k for k, _, _ in our_kv] == [k for k, _, _ in their_kv], "metadata keys or their order differ"
    for (k, t1, v1), (_, t2, v2) in zip(our_kv, their_kv):
        assert t1 == t2, f"{k}: value type {t1} vs llama.cpp's {t2}"
        if isinstance(v1, float):
            assert v1 == pytest.approx(v2, rel=1e-7), k
        else:
            assert v1 == v2, f"{k}: {str(v1)[:200]} vs llama.cpp's {str(v2)[:200]}"
    ours_t, theirs_t = tensor_items(ours), tensor_items(theirs)
    assert [t[:3] for t in ours_t] == [t[:3] for t in theirs_t], "tensor names, order, types or shapes differ"
    for (name, _, _, b1), (_, _, _, b2) in zip(ours_t, theirs_t):
        assert b1 == b2, f"tensor {name}: data differs"


@pytest.mark.parametrize("outtype", TEXT_TYPES)
def test_text_gguf_identical_to_llamacpp(outtype, tiny_checkpoint, convert_tiny, llamacpp_outputs):
    text, _ = convert_tiny(tiny_checkpoint, outtype, "f16")
    assert_same_file(text, llamacpp_outputs[(tiny_checkpoint.name, "text", outtype)])


@pytest.mark.parametrize("outtype", MMPROJ_TYPES)
def test_mmproj_gguf_identical_to_llamacpp(outtype, tiny_checkpoint, convert_tiny, llamacpp_outputs):
    _, mmproj = convert_tiny(tiny_checkpoint, "f32", outtype)
    assert_same_file(mmproj, llamacpp_outputs[(tiny_checkpoint.name, "mmproj", outtype)])


@pytest.mark.parametrize("outtype", ALT_TYPES)
def test_other_architecture_shapes_identical_to_llamacpp(outtype, alt_checkpoint, convert_tiny, llamacpp_outputs):
    # Sharded f16 checkpoint, GQA 3, rope sections [2,1,1], theta 5e5, FFN rows of 100 (q8_0 -> F16 fallback).
    text, mmproj = convert_tiny(alt_checkpoint, outtype, outtype)
    assert_same_file(text, llamacpp_outputs[(alt_checkpoint.name, "text", outtype)])
    assert_same_file(mmproj, llamacpp_outputs[(alt_checkpoint.name, "mmproj", outtype)])


def test_our_extra_keys(tiny_checkpoint, convert_tiny):
    text, mmproj = convert_tiny(tiny_checkpoint, "f32", "f16")
    gen = json.loads((tiny_checkpoint / "generation_config.json").read_text())
    pre = json.loads((tiny_checkpoint / "preprocessor_config.json").read_text())
    text_kv = {k: v for k, _, v in kv_items(text)}
    mm_kv = {k: v for k, _, v in kv_items(mmproj)}
    assert text_kv["autoglm.eog_token_ids"] == gen["eos_token_id"]
    assert mm_kv["autoglm.image_min_pixels"] == pre["size"]["shortest_edge"]
    assert mm_kv["autoglm.image_max_pixels"] == pre["size"]["longest_edge"]
    assert mm_kv["autoglm.vision.spatial_merge_size"] == 2
