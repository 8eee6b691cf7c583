"""Converter behaviour: layout and types per outtype, values against the checkpoint, bad input."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, quants

from _tiny_configs import ALT_TEXT
from autoglm_gguf._tiny.checkpoint import write_checkpoint
from autoglm_gguf.cli import main as cli_main
from autoglm_gguf.convert import ConvertOptions, convert_checkpoint
from autoglm_gguf.errors import ConversionError
from autoglm_gguf.gguf_info import field_value


def tensors(path: Path) -> dict:
    return {t.name: t for t in GGUFReader(path).tensors}


def metadata(path: Path) -> dict:
    return {k: field_value(f) for k, f in GGUFReader(path).fields.items()}


def hf_tensor(ckpt: Path, name: str) -> np.ndarray:
    from safetensors.numpy import load_file  # f32 checkpoints only

    for f in sorted(ckpt.glob("*.safetensors")):
        data = load_file(f)
        if name in data:
            return data[name]
    raise KeyError(name)


def test_tensor_counts_follow_the_config(tiny_checkpoint, alt_checkpoint, convert_tiny):
    for ckpt in (tiny_checkpoint, alt_checkpoint):
        cfg = json.loads((ckpt / "config.json").read_text())
        n_layer, depth = cfg["text_config"]["num_hidden_layers"], cfg["vision_config"]["depth"]
        text, mmproj = convert_tiny(ckpt, "f32", "f32")
        # token_embd + output + output_norm + 13 per layer; 7 per ViT block + 14 (Conv3d split in two).
        assert len(tensors(text)) == 3 + 13 * n_layer
        assert len(tensors(mmproj)) == 14 + 7 * depth
        assert not any(n.startswith(("v.", "mm.")) for n in tensors(text))


def test_q4_0_storage_types(alt_checkpoint, convert_tiny):
    text, _ = convert_tiny(alt_checkpoint, "q4_0", "f16")
    ts = tensors(text)
    assert ts["blk.0.attn_q.weight"].tensor_type == Q.Q4_0
    assert ts["token_embd.weight"].tensor_type == Q.Q4_0
    assert ts["blk.0.attn_q.bias"].tensor_type == Q.F32
    assert ts["blk.0.ffn_norm.weight"].tensor_type == Q.F32
    # rows of 100 (the FFN width) do not fit 32-blocks: documented fallback to F16
    assert ts["blk.0.ffn_down.weight"].tensor_type == Q.F16
    # output head: Q6_K as llama-quantize; rows of 96 do not fit 256-blocks -> Q8_0
    assert ts["output.weight"].tensor_type == Q.Q8_0
    assert metadata(text)["general.file_type"] == 2


def test_q4_0_head_is_q6_k_when_rows_fit(tmp_path):
    from autoglm_gguf._tiny.checkpoint import make_config

    ckpt = write_checkpoint(tmp_path / "wide", make_config(text={"hidden_size": 256, "num_attention_heads": 8,
                                                                 "num_key_value_heads": 2}), dtype="bf16")
    convert_checkpoint(ckpt, ConvertOptions(outfile=tmp_path / "m.gguf", mmproj=False, progress=False))
    assert tensors(tmp_path / "m.gguf")["output.weight"].tensor_type == Q.Q6_K


def test_q4_0_values_dequantize_close_to_the_checkpoint(tiny_checkpoint_f32, convert_tiny):
    text, _ = convert_tiny(tiny_checkpoint_f32, "q4_0", "f16")
    t = tensors(text)["blk.1.attn_v.weight"]
    back = quants.dequantize(np.asarray(t.data), Q.Q4_0).reshape(t.shape[::-1].tolist())
    ref = hf_tensor(tiny_checkpoint_f32, "model.language_model.layers.1.self_attn.v_proj.weight")
    err = np.abs(back - ref).max() / np.abs(ref).max()
    assert err < 0.1  # Q4_0: 4-bit steps of max/8 per 32-block


def test_qk_rows_permuted_to_neox_order(tiny_checkpoint_f32, convert_tiny):
    """Spec A.3.3, restated independently: per head, rows 2j then 2j+1 of the rotary part."""
    cfg = json.loads((tiny_checkpoint_f32 / "config.json").read_text())["text_config"]
    n_head, n_kv, hidden = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    head_dim = hidden // n_head
    n_rot = int(head_dim * cfg["rope_parameters"]["partial_rotary_factor"])
    text, _ = convert_tiny(tiny_checkpoint_f32, "f32", "f32")
    ts = tensors(text)
    for proj, heads in (("q", n_head), ("k", n_kv)):
        w = hf_tensor(tiny_checkpoint_f32, f"model.language_model.layers.0.self_attn.{proj}_proj.weight")
        got = np.asarray(ts[f"blk.0.attn_{proj}.weight"].data)
        for h in range(heads):
            src = w[h * head_dim:(h + 1) * head_dim]
            dst = got[h * head_dim:(h + 1) * head_dim]
            for j in range(n_rot // 2):
                np.testing.assert_array_equal(dst[j], src[2 * j])
                np.testing.assert_array_equal(dst[n_rot // 2 + j], src[2 * j + 1])
            np.testing.assert_array_equal(dst[n_rot:], src[n_rot:])
    v = hf_tensor(tiny_checkpoint_f32, "model.language_model.layers.0.self_attn.v_proj.weight")
    np.testing.assert_array_equal(np.asarray(ts["blk.0.attn_v.weight"].data), v)


def test_conv3d_split_and_mmproj_types(tiny_checkpoint_f32, convert_tiny):
    _, mmproj = convert_tiny(tiny_checkpoint_f32, "f32", "f16")
    ts = tensors(mmproj)
    w = hf_tensor(tiny_checkpoint_f32, "model.visual.patch_embed.proj.weight")  # [out, C, 2, p, p]
    for t, name in enumerate(("v.patch_embd.weight", "v.patch_embd.weight.1")):
        assert ts[name].tensor_type == Q.F16
        np.testing.assert_array_equal(np.asarray(ts[name].data).astype(np.float32),
                                      w[:, :, t].astype(np.float16).astype(np.float32))
    assert ts["v.position_embd.weight"].tensor_type == Q.F32
    assert ts["mm.patch_merger.weight"].tensor_type == Q.F16
    assert ts["v.blk.0.attn_qkv.weight"].tensor_type == Q.F16
    assert ts["mm.post_norm.bias"].tensor_type == Q.F32
    kv = metadata(mmproj)
    assert kv["clip.projector_type"] == "glm4v" and kv["general.architecture"] == "clip"


def test_hparams_come_from_the_config(alt_checkpoint, convert_tiny):
    text, mmproj = convert_tiny(alt_checkpoint, "f32", "f32")
    kv = metadata(text)
    assert kv["glm4.embedding_length"] == ALT_TEXT["hidden_size"]
    assert kv["glm4.attention.head_count"] == 6 and kv["glm4.attention.head_count_kv"] == 2
    assert kv["glm4.rope.freq_base"] == 500000.0
    assert kv["glm4.rope.dimension_sections"] == [2, 1, 1, 0]
    assert kv["glm4.rope.dimension_count"] == 8
    assert kv["glm4.feed_forward_length"] == 100
    mm = metadata(mmproj)
    assert mm["clip.vision.block_count"] == 3 and mm["clip.vision.embedding_length"] == 48
    assert mm["clip.vision.image_size"] == 84


def test_bf16_f16_f32_checkpoints_give_the_same_f32_model(tmp_path):
    outs = []
    for dt in ("f32", "bf16", "f16"):
        ckpt = write_checkpoint(tmp_path / dt / "m", dtype=dt, seed=3)
        out = tmp_path / f"{dt}.gguf"
        convert_checkpoint(ckpt, ConvertOptions(outfile=out, outtype="f32", mmproj=False, progress=False))
        outs.append(np.asarray(tensors(out)["blk.0.ffn_up.weight"].data))
    # same random draws, rounded to each storage dtype: bf16 within 2^-8 relative, f16 within 2^-11
    assert np.allclose(outs[1], outs[0], rtol=2 ** -8, atol=1e-6)
    assert np.allclose(outs[2], outs[0], rtol=2 ** -11, atol=1e-6)


def test_default_output_names(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = convert_checkpoint(tiny_checkpoint, ConvertOptions(progress=False))
    names = sorted(Path(p).name for p in result)
    assert names == sorted([f"{tiny_checkpoint.name}-Q4_0.gguf", f"mmproj-{tiny_checkpoint.name}-F16.gguf"])


# ---------------------------------------------------------------------------------------------- bad input

def no_outputs(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.suffix in (".gguf", ".partial") or p.name.endswith(".partial"))


def convert_expecting(ckpt, out_dir: Path, match: str, **kw):
    opts = ConvertOptions(outfile=out_dir / "m.gguf", progress=False, **kw)
    with pytest.raises(ConversionError, match=match):
        convert_checkpoint(ckpt, opts)
    assert no_outputs(out_dir) == [], "a failed conversion left files behind"


@pytest.fixture
def ckpt_copy(tiny_checkpoint, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))


@pytest.fixture
def out_dir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def test_not_a_directory(tmp_path, out_dir):
    convert_expecting(tmp_path / "nope", out_dir, "not a directory")


def test_directory_without_config(tmp_path, out_dir):
    (tmp_path / "empty").mkdir()
    convert_expecting(tmp_path / "empty", out_dir, r"missing config\.json")


def test_other_architecture(ckpt_copy, out_dir):
    cfg = json.loads((ckpt_copy / "config.json").read_text())
    cfg.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (ckpt_copy / "config.json").write_text(json.dumps(cfg))
    convert_expecting(ckpt_copy, out_dir, r"only Glm4vForConditionalGeneration")


def test_missing_shard(tmp_path, out_dir):
    ckpt = write_checkpoint(tmp_path / "sharded", dtype="bf16", max_shard_bytes=60_000)
    shards = sorted(ckpt.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[-1].unlink()
    convert_expecting(ckpt, out_dir, rf"missing: {shards[-1].name}")


def test_truncated_shard(ckpt_copy, out_dir):
    f = ckpt_copy / "model.safetensors"
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        fh.truncate(size - 1000)
    convert_expecting(ckpt_copy, out_dir, r"truncated")


def test_unexpected_tensor_shape(ckpt_copy, out_dir):
    cfg = json.loads((ckpt_copy / "config.json").read_text())
    cfg["text_config"]["intermediate_size"] += 32
    (ckpt_copy / "config.json").write_text(json.dumps(cfg))
    n_ff = cfg["text_config"]["intermediate_size"]
    convert_expecting(ckpt_copy, out_dir,
                      rf"layers\.0\.mlp\.(gate_up|down)_proj\.weight has shape \[\d+, \d+\], expected \[(\d+, {n_ff}|{2 * n_ff}, \d+)\]")


def test_missing_tokenizer(ckpt_copy, out_dir):
    (ckpt_copy / "tokenizer.json").unlink()
    convert_expecting(ckpt_copy, out_dir, r"missing tokenizer\.json")


def test_unknown_outtype(tiny_checkpoint, out_dir, capsys):
    convert_expecting(tiny_checkpoint, out_dir, r"unknown --outtype 'q5_k'", outtype="q5_k")
    with pytest.raises(SystemExit) as e:
        cli_main(["convert", str(tiny_checkpoint), "--outtype", "q5_k", "-o", str(out_dir / "m.gguf")])
    assert e.value.code == 2
    assert "invalid choice: 'q5_k'" in capsys.readouterr().err


def test_existing_output_needs_force(tiny_checkpoint, out_dir, capsys):
    target = out_dir / "m.gguf"
    target.write_bytes(b"precious")
    rc = cli_main(["convert", str(tiny_checkpoint), "-o", str(target), "--no-mmproj", "-q"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert target.read_bytes() == b"precious"
    assert cli_main(["convert", str(tiny_checkpoint), "-o", str(target), "--no-mmproj", "-q", "--force"]) == 0
    assert target.read_bytes()[:4] == b"GGUF"


def test_failure_midway_leaves_nothing(ckpt_copy, out_dir):
    """A tensor that cannot be converted (NaN) is found while writing: both outputs must vanish."""
    f = ckpt_copy / "model.safetensors"
    raw = f.read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    name = "model.language_model.norm.weight"  # written late in the text file
    start = 8 + hlen + header[name]["data_offsets"][0]
    with open(f, "r+b") as fh:
        fh.seek(start)
        fh.write(b"\xc0\x7f")  # bf16 NaN
    convert_expecting(ckpt_copy, out_dir, r"output_norm\.weight: non-finite value", outtype="f32",
                      mmproj_outfile=out_dir / "mm.gguf")


def test_outputs_get_ordinary_permissions(tiny_checkpoint, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        convert_checkpoint(tiny_checkpoint, ConvertOptions(outfile=tmp_path / "m.gguf", progress=False))
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.glob("*.gguf")} == {oct(0o644)}
