"""Bad input files outside the runtime: checkpoints the converter must refuse before writing anything,
and GGUF headers whose counts lie (`autoglm-gguf info` must not believe them)."""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import pytest

from autoglm_gguf.convert import ConvertOptions, convert_checkpoint
from autoglm_gguf.errors import ConversionError

# ------------------------------------------------------------------------------------------ the converter

@pytest.fixture
def ckpt(tiny_checkpoint, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))


def refuses(ckpt_dir: Path, match: str) -> None:
    out = ckpt_dir.parent / "out"
    out.mkdir(exist_ok=True)
    with pytest.raises(ConversionError, match=match):
        convert_checkpoint(ckpt_dir, ConvertOptions(outfile=out / "m.gguf", progress=False))
    assert list(out.iterdir()) == [], "a refused conversion left files behind"


def edit_config(ckpt_dir: Path, fn) -> None:
    p = ckpt_dir / "config.json"
    cfg = json.loads(p.read_text())
    fn(cfg)
    p.write_text(json.dumps(cfg))


def test_converter_refuses_another_architecture_even_with_model_type_glm4v(ckpt):
    edit_config(ckpt, lambda c: c.update(architectures=["LlamaForCausalLM"]))
    refuses(ckpt, "only Glm4vForConditionalGeneration")


@pytest.mark.parametrize("section,key,value,match", [
    ("text_config", "rms_norm_eps", -1e-5, r"text_config\.rms_norm_eps = -1e-05 must be a finite number"),
    ("text_config", "rms_norm_eps", math.nan, r"rms_norm_eps = nan"),
    ("text_config", "rope_theta", 0, r"rope_theta = 0 must be a finite number"),
    ("text_config", "rope_theta", -10000.0, r"rope_theta = -10000.0"),
    ("text_config", "num_attention_heads", 0, r"num_attention_heads = 0 must be an integer"),
    ("text_config", "hidden_size", "4096", r"hidden_size = '4096' must be an integer"),
    ("text_config", "num_hidden_layers", 10 ** 30, r"num_hidden_layers = 10{30} must be an integer"),
    ("text_config", "mrope_section", [8, -2, 6], r"mrope_section .* non-negative integers"),
    ("vision_config", "rms_norm_eps", math.inf, r"vision_config\.rms_norm_eps = inf"),
    ("vision_config", "patch_size", 0, r"patch_size = 0 must be an integer"),
    ("vision_config", "depth", [24], r"depth = \[24\] must be an integer"),
])
def test_converter_refuses_out_of_range_config_values(ckpt, section, key, value, match):
    def change(cfg):
        where = cfg[section]
        if key in ("rope_theta", "mrope_section") and isinstance(where.get("rope_parameters"), dict):
            where["rope_parameters"][key] = value
        if key == "rope_theta" and "rope_theta" in where or key not in ("rope_theta", "mrope_section"):
            where[key] = value
        elif key == "rope_theta":
            where.setdefault("rope_parameters", {})[key] = value
    edit_config(ckpt, change)
    refuses(ckpt, match)


def _rewrite_safetensors_header(path: Path, fn) -> None:
    data = path.read_bytes()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    fn(header)
    new = json.dumps(header, separators=(",", ":")).encode()
    new += b" " * (hlen - len(new)) if len(new) <= hlen else b""
    assert len(new) == hlen, "the edited header must keep its length"
    path.write_bytes(data[:8] + new + data[8 + hlen:])


def test_converter_refuses_overlapping_tensors(ckpt):
    def overlap(header):
        same = {}
        for name, info in header.items():
            if name != "__metadata__":
                same.setdefault((info["dtype"], tuple(info["shape"])), []).append(name)
        a, b = next(v for v in same.values() if len(v) >= 2)[:2]
        header[b]["data_offsets"] = list(header[a]["data_offsets"])
    _rewrite_safetensors_header(ckpt / "model.safetensors", overlap)
    refuses(ckpt, "overlap in the file")


def test_converter_refuses_shards_outside_the_checkpoint(ckpt, tmp_path):
    from safetensors import safe_open  # noqa: F401  (only to be sure the test extra is installed)

    header_names = []
    _rewrite_safetensors_header(ckpt / "model.safetensors", lambda h: header_names.extend(k for k in h if k != "__metadata__"))
    shutil.move(ckpt / "model.safetensors", tmp_path / "outside.safetensors")
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {n: "../outside.safetensors" for n in header_names}}))
    refuses(ckpt, r"shard '\.\./outside\.safetensors' is not a file name in the checkpoint directory")


def test_converter_reports_malformed_files_without_a_traceback(ckpt):
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    tok["model"] = ["not", "an", "object"]
    (ckpt / "tokenizer.json").write_text(json.dumps(tok))
    refuses(ckpt, r"malformed|tokenizer")


# ------------------------------------------------------------------------------------------ `info`
def _gguf_bytes(kv: bytes, n_kv: int = 1, n_tensors: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kv


def _key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


@pytest.mark.parametrize("body,n_kv,n_tensors,match", [
    (_key("x") + struct.pack("<IIQ", 9, 4, 2 ** 32 - 1), 1, 0, r"x: array of 4294967295 elements"),
    (_key("x") + struct.pack("<IIQ", 9, 8, 2 ** 40), 1, 0, r"x: array of 1099511627776 strings"),
    (_key("x") + struct.pack("<I", 77), 1, 0, r"x: value type 77 is not a GGUF type"),
    (struct.pack("<Q", 2 ** 62), 1, 0, r"metadata key 0 claims"),
    (b"", 2 ** 40, 0, r"claims 1099511627776 metadata pairs"),
], ids=["u32-array-2^32-1", "string-array-2^40", "bad-type", "huge-key", "huge-kv-count"])
def test_info_refuses_lying_counts_at_once(tmp_path, body, n_kv, n_tensors, match):
    from autoglm_gguf.cli import main
    from autoglm_gguf.errors import GGUFFileError
    from autoglm_gguf.gguf_info import summarize

    f = tmp_path / "bad.gguf"
    f.write_bytes(_gguf_bytes(body, n_kv, n_tensors) + b"\0" * 64)
    with pytest.raises(GGUFFileError, match=match):
        summarize(f)
    assert main(["info", str(f)]) == 1
