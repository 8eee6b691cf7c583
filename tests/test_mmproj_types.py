"""mmproj storage types: F16, Q8_0 and the 4-bit options (Q4_K, Q4_0) against the F32 tower.

A vision tower 256 wide (so Q4_K's 256-blocks fit its attention and MLP rows; the merger's rows of
320 fall back to Q5_0, as llama.cpp would), converted once per type from one F32 checkpoint, encodes
the same picture; the error of each type's image embeddings against the F32 file's is reported and
bounded, and each coarser type must be worse than the finer one (so a type silently not applied, or
applied to the wrong tensors, fails). `autoglm-gguf quantize` on the F32 mmproj gives the same
tensors as converting straight to that type.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from autoglm_gguf._tiny.checkpoint import make_config, write_checkpoint
from autoglm_gguf.convert import ConvertOptions, convert_checkpoint
from autoglm_gguf.quantize import quantize_gguf
from autoglm_gguf.vision import ImageEncoder

WIDE_VISION = {"hidden_size": 256, "depth": 2, "num_heads": 4, "intermediate_size": 320, "out_hidden_size": 64}
# Relative RMS error ||Δ|| / ||embedding|| against the F32 tower. This random-weight tower amplifies
# weight rounding ~15x (F16's 5e-4 per weight becomes 8e-3), so its absolute numbers say little about a
# trained tower; measured: f16 7.8e-3, q8_0 0.11, q4_k 0.65, q4_0 0.85. The bounds (~2x, the 4-bit
# ones 1.5x) catch a broken type; the strict ordering below catches a type that was not applied.
BOUNDS = {"f16": 2e-2, "q8_0": 0.25, "q4_k": 1.0, "q4_0": 1.3}


def _picture(width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng([width, height])
    ramp = (np.arange(width)[None, :, None] * 127 // max(1, width - 1)).astype(np.uint16)
    return (rng.integers(0, 128, size=(height, width, 3), dtype=np.uint16) + ramp).astype(np.uint8)


@pytest.fixture(scope="module")
def towers(tmp_path_factory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("mmproj-types")
    ckpt = write_checkpoint(out / "wide-vit", make_config(vision=WIDE_VISION), dtype="f32", seed=5)
    paths = {}
    for t in ["f32", *BOUNDS]:
        paths[t] = out / f"mmproj-{t}.gguf"
        convert_checkpoint(ckpt, ConvertOptions(outfile=out / f"text-{t}.gguf", outtype="f32", mmproj_outfile=paths[t],
                                                mmproj_outtype=t, progress=False))
    return paths


def _embed(path) -> np.ndarray:
    return np.asarray(ImageEncoder(str(path), n_threads=2, use_gpu=False).encode(_picture(112, 84)).embeddings)


def test_types_are_applied(towers):
    want = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0,
            "q4_k": gguf.GGMLQuantizationType.Q4_K, "q4_0": gguf.GGMLQuantizationType.Q4_0}
    for t, qtype in want.items():
        ts = {x.name: x.tensor_type for x in gguf.GGUFReader(towers[t]).tensors}
        assert ts["v.blk.0.attn_qkv.weight"] == qtype, t
        assert ts["v.position_embd.weight"] == gguf.GGMLQuantizationType.F32
    # the merger's 320-long rows do not fit 256-blocks: llama.cpp's fallback Q4_K -> Q5_0
    q4k = {x.name: x.tensor_type for x in gguf.GGUFReader(towers["q4_k"]).tensors}
    assert gguf.GGMLQuantizationType.Q5_0 in q4k.values()


def test_embedding_error_per_type(towers, capsys):
    ref = _embed(towers["f32"])
    emb = {t: _embed(towers[t]) for t in BOUNDS}
    err = {t: float(np.linalg.norm(e - ref) / np.linalg.norm(ref)) for t, e in emb.items()}
    worst = {t: float(np.abs(e - ref).max() / np.abs(ref).max()) for t, e in emb.items()}
    with capsys.disabled():
        print("\nmmproj image-embedding error vs F32, relative RMS (max element): " +
              ", ".join(f"{t} {err[t]:.2e} ({worst[t]:.2e})" for t in BOUNDS))
    for t, bound in BOUNDS.items():
        assert err[t] <= bound, (t, err[t])
    assert 0 < err["f16"] < err["q8_0"] < min(err["q4_k"], err["q4_0"])


def test_quantize_command_on_an_mmproj_matches_conversion(towers, tmp_path):
    out = tmp_path / "requant-q8_0.gguf"
    quantize_gguf(towers["f32"], out, "q8_0", progress=False)
    a = {t.name: (t.tensor_type, bytes(t.data)) for t in gguf.GGUFReader(out).tensors}
    b = {t.name: (t.tensor_type, bytes(t.data)) for t in gguf.GGUFReader(towers["q8_0"]).tensors}
    for name, (qtype, data) in b.items():
        if qtype == gguf.GGMLQuantizationType.Q8_0:
            assert a[name] == (qtype, data), name
