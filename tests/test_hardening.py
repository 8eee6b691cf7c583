"""Inputs that used to take the process down (issue #12's findings) now get clear errors."""

from __future__ import annotations

import os

import pytest

from autoglm_gguf import AutoGLM, ImageError
from autoglm_gguf.images import load_image


def test_absurd_thread_counts_are_refused(tiny_f32_model_file):
    for n in (32768, 70000):
        with pytest.raises(ValueError, match=f"n_threads = {n} is more than 1024"):
            AutoGLM(tiny_f32_model_file, n_ctx=64, n_threads=n)
    llm = AutoGLM(tiny_f32_model_file, n_ctx=64, n_threads=3)
    assert llm.generate("[gMASK]<sop>hi", max_tokens=2) is not None


def test_device_files_and_fifos_are_not_read_as_images(tmp_path):
    with pytest.raises(ImageError, match="not a regular file"):
        load_image("/dev/zero")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):  # would block forever if opened
        load_image(str(fifo))
    with pytest.raises(ImageError, match="directory"):
        load_image(str(tmp_path))


def rewrite_gguf(src, dst, changes: dict | None = None, *, tensor_types: dict | None = None,
                 array_types: dict | None = None):
    """A copy of GGUF `src` with metadata values replaced ({key: value}, same value type), tensors stored
    as another type ({name: "f16" | "i32"}: F32 data converted, or its bytes reinterpreted as int32),
    or metadata arrays re-typed ({key: gguf.GGUFValueType}, values converted with str())."""
    import gguf
    import numpy as np

    from autoglm_gguf.gguf_info import field_value

    changes, tensor_types, array_types = changes or {}, tensor_types or {}, array_types or {}
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, field_value(r.fields["general.architecture"]))
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vt, value = f.types[0], changes.get(name, field_value(f))
        if name in array_types:
            w.add_key_value(name, [str(v) for v in value], vt, sub_type=array_types[name])
        elif vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(name, value, vt, sub_type=f.types[-1])
        else:
            w.add_key_value(name, value, vt)
    for t in r.tensors:
        data, dtype = np.array(t.data), t.tensor_type
        if t.name in tensor_types:
            assert dtype == gguf.GGMLQuantizationType.F32, "retyping starts from an F32 tensor"
            if tensor_types[t.name] == "f16":
                data, dtype = data.astype(np.float16), gguf.GGMLQuantizationType.F16
            else:
                data, dtype = data.view(np.int32), gguf.GGMLQuantizationType.I32
        w.add_tensor(t.name, data, raw_shape=list(reversed([int(d) for d in t.shape])), raw_dtype=dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


@pytest.mark.parametrize("key,value,message", [
    ("glm4.attention.layer_norm_rms_epsilon", -1e-5, "layer_norm_rms_epsilon"),
    ("glm4.attention.layer_norm_rms_epsilon", float("nan"), "layer_norm_rms_epsilon"),
    ("glm4.rope.freq_base", 0.0, "rope.freq_base"),
    ("glm4.rope.freq_base", float("inf"), "rope.freq_base"),
    ("glm4.block_count", 50_000_000, "block_count 50000000"),
])
def test_bad_text_hyperparameters_are_file_errors(tiny_f32_model_file, tmp_path, key, value, message):
    from autoglm_gguf import GGUFFileError

    bad = rewrite_gguf(tiny_f32_model_file, tmp_path / "bad.gguf", {key: value})
    with pytest.raises(GGUFFileError, match=message):
        AutoGLM(bad, n_ctx=64)


@pytest.mark.parametrize("key,value,message", [
    ("clip.vision.image_std", [0.26, 1e-9, 0.27], "image_std channel 1"),
    ("clip.vision.attention.layer_norm_epsilon", float("nan"), "layer_norm_epsilon"),
    ("autoglm.image_min_pixels", 300_000_000, "image_min/max_pixels"),
    ("clip.vision.block_count", 2 ** 31, "block_count 2147483648 is more than"),  # found by fuzz/run.py
])
def test_bad_vision_hyperparameters_are_file_errors(tiny_f32_files, tmp_path, key, value, message):
    from autoglm_gguf import GGUFFileError, _core

    mmproj = tiny_f32_files[1]
    bad = rewrite_gguf(mmproj, tmp_path / "mmproj-bad.gguf", {key: value})
    with pytest.raises(GGUFFileError, match=message):
        _core.VisionModel(str(bad), use_gpu=False)


@pytest.mark.parametrize("tensor,new_type,message", [
    ("blk.0.attn_norm.weight", "f16", r"'blk\.0\.attn_norm\.weight' is stored as f16, which this runtime needs as F32"),
    ("blk.0.attn_q.bias", "f16", r"'blk\.0\.attn_q\.bias' is stored as f16"),
    ("blk.1.attn_q.weight", "i32", r"'blk\.1\.attn_q\.weight' is stored as i32, which is not a weight type"),
    ("token_embd.weight", "i32", r"'token_embd\.weight' is stored as i32"),
])
def test_tensor_types_the_graph_cannot_take_are_file_errors(tiny_f32_model_file, tmp_path, tensor, new_type,
                                                            message):
    from autoglm_gguf import GGUFFileError

    bad = rewrite_gguf(tiny_f32_model_file, tmp_path / "bad.gguf", tensor_types={tensor: new_type})
    with pytest.raises(GGUFFileError, match=message):
        AutoGLM(bad, n_ctx=64)


def test_vision_tensor_types_and_array_element_types_are_checked(tiny_f32_files, tiny_f32_model_file,
                                                                 tmp_path):
    import gguf

    from autoglm_gguf import GGUFFileError, _core

    mmproj = tiny_f32_files[1]
    for tensor, kind, message in [("v.position_embd.weight", "f16", "v.position_embd.weight' is stored as f16"),
                                  ("v.blk.0.attn_qkv.weight", "i32", "is not a weight type"),
                                  ("mm.post_norm.weight", "f16", "needs as F32")]:
        bad = rewrite_gguf(mmproj, tmp_path / f"mmproj-{kind}.gguf", tensor_types={tensor: kind})
        with pytest.raises(GGUFFileError, match=message):
            _core.VisionModel(str(bad), use_gpu=False)
    # an integer array stored as strings: refused before its data is read (ggml asserts on that read)
    bad = rewrite_gguf(tiny_f32_model_file, tmp_path / "strings.gguf",
                       array_types={"tokenizer.ggml.token_type": gguf.GGUFValueType.STRING})
    with pytest.raises(GGUFFileError, match="tokenizer.ggml.token_type' should be an integer array, holds str"):
        AutoGLM(bad, n_ctx=64)


def test_images_past_the_pixel_budget_are_refused_before_decoding():
    import struct
    import zlib

    from autoglm_gguf.images import MAX_IMAGE_PIXELS

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    side = 9000  # 81 MP: under Pillow's error threshold (it only warns), over ours
    assert side * side > MAX_IMAGE_PIXELS
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)) +
           chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))
    with pytest.raises(ImageError, match="81 MP, more than the 50 MP"):
        load_image(png)
