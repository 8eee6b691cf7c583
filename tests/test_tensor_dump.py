"""AUTOGLM_DUMP_TENSORS: the runtime writes its named intermediates as .npy files, and comparing them
with PyTorch forward hooks on the reference localizes a parity failure to the layer (and the half of
the layer) where it starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import Glm4vForConditionalGeneration

PROMPT_IDS = [5, 17, 42, 99, 3, 250, 7, 61, 128, 300, 11, 2]  # any ids inside the alt vocabulary (509)
BROKEN_LAYER = 1

# Runs in its own process: the variable is read once per process.
_TEXT_WORKER = """
import sys
from autoglm_gguf import _core
path, ids = sys.argv[1], [int(x) for x in sys.argv[2].split(",")]
s = _core.Session(_core.TextModel(path, n_threads=2), n_ctx=64, kv_type="f32")
s.eval_tokens(ids, "all")
"""

_VISION_WORKER = """
import sys
import numpy as np
from autoglm_gguf import _core
v = _core.VisionModel(sys.argv[1], n_threads=2)
gh, gw = 4, 6
p = v.hparams["patch_size"]
patches = np.random.default_rng(0).standard_normal((gh * gw, 3 * p * p)).astype(np.float32)
np.save(sys.argv[2], v.encode(patches, gh, gw))
"""


def _run(worker: str, args: list[str], dump_dir: Path) -> Path:
    env = dict(os.environ, AUTOGLM_DUMP_TENSORS=str(dump_dir))
    proc = subprocess.run([sys.executable, "-c", worker, *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    runs = sorted(p for p in dump_dir.iterdir() if p.is_dir())
    assert runs, f"nothing dumped under {dump_dir}"
    return runs[0]


def _dump_text(gguf_path: Path, dump_dir: Path) -> dict[str, np.ndarray]:
    run = _run(_TEXT_WORKER, [str(gguf_path), ",".join(map(str, PROMPT_IDS))], dump_dir)
    assert run.name.endswith("-text")
    return {p.stem: np.load(p) for p in run.glob("*.npy")}


def _reference_layers(ckpt: Path) -> dict[str, np.ndarray]:
    """float64 transformers with forward hooks: each decoder layer's output, and the residual stream
    after its attention half (the input of post_attention_layernorm, the pre-MLP norm)."""
    hf = Glm4vForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float64).eval()
    out: dict[str, np.ndarray] = {}
    hooks = []
    for il, layer in enumerate(hf.model.language_model.layers):
        def layer_hook(_m, _inp, output, il=il):
            h = output[0] if isinstance(output, tuple) else output
            out[f"l_out-{il}"] = h[0].numpy()

        def pre_mlp_hook(_m, inp, il=il):
            out[f"attn_residual-{il}"] = inp[0][0].numpy()

        hooks.append(layer.register_forward_hook(layer_hook))
        hooks.append(layer.post_attention_layernorm.register_forward_pre_hook(pre_mlp_hook))
    with torch.no_grad():
        hf(input_ids=torch.tensor([PROMPT_IDS]))
    for h in hooks:
        h.remove()
    return out


def first_divergence(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], n_layer: int, tol: float):
    """The first of (attn_residual-i, l_out-i), in graph order, whose dump differs from the reference."""
    for il in range(n_layer):
        for name in (f"attn_residual-{il}", f"l_out-{il}"):
            assert ours[name].shape == ref[name].shape, name
            if np.abs(ours[name] - ref[name]).max() > tol:
                return name
    return None


@pytest.fixture(scope="module")
def alt_f32(alt_checkpoint, convert_tiny):
    path, mmproj = convert_tiny(alt_checkpoint, "f32", "f32")
    return alt_checkpoint, path, mmproj


def test_dump_matches_the_reference_layer_by_layer(alt_f32, tmp_path):
    ckpt, path, _ = alt_f32
    ours = _dump_text(path, tmp_path / "dump")
    n_layer = json.loads((ckpt / "config.json").read_text())["text_config"]["num_hidden_layers"]
    # the names graph_util.h promises, per layer, shaped (tokens, width) like PyTorch's
    for il in range(n_layer):
        for name in ("attn_norm", "kqv_out", "attn_residual", "ffn_norm", "l_out"):
            assert f"{name}-{il}" in ours
    assert ours["result_output"].shape[0] == len(PROMPT_IDS)
    assert first_divergence(ours, _reference_layers(ckpt), n_layer, 1e-4) is None


def test_dump_localizes_a_broken_layer(alt_f32, tmp_path):
    ckpt, path, _ = alt_f32
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(path.read_bytes())
    r = gguf.GGUFReader(broken, "r+")
    (t,) = [t for t in r.tensors if t.name == f"blk.{BROKEN_LAYER}.ffn_down.weight"]
    # A deliberately wrong MLP in one layer: half its output features negated (a scale alone would not
    # do: GLM-4's post-MLP RMSNorm cancels it).
    t.data[: t.data.shape[0] // 2] *= -1.0
    r.data.flush()
    del r

    ours = _dump_text(broken, tmp_path / "dump")
    n_layer = json.loads((ckpt / "config.json").read_text())["text_config"]["num_hidden_layers"]
    # layers before it and the attention half of the broken layer still agree; its MLP half does not
    assert first_divergence(ours, _reference_layers(ckpt), n_layer, 1e-4) == f"l_out-{BROKEN_LAYER}"


def test_vision_encode_is_dumped(alt_f32, tmp_path):
    ckpt, _, mmproj = alt_f32
    run = _run(_VISION_WORKER, [str(mmproj), str(tmp_path / "emb.npy")], tmp_path / "dump")
    assert run.name.endswith("-vision")
    depth = json.loads((ckpt / "config.json").read_text())["vision_config"]["depth"]
    width = json.loads((ckpt / "config.json").read_text())["vision_config"]["hidden_size"]
    for il in range(depth):
        assert np.load(run / f"v_l_out-{il}.npy").shape == (4 * 6, width)
    # the last dump is what encode returned
    np.testing.assert_array_equal(np.load(run / "v_out.npy"), np.load(tmp_path / "emb.npy"))
