"""The importance matrix: statistics collected by the runtime against transformers (hooks on every decoder
Linear), llama.cpp's 16-row rule, images, the imatrix GGUF file (keys, tensors, load/round trip), the
calibration file and the CLI with its errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, Glm4vForConditionalGeneration
from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

from autoglm_gguf import AutoGLM, _core
from autoglm_gguf.calibration import (
    CalibrationError,
    Conversation,
    builtin_calibration,
    load_calibration,
    write_calibration,
)
from autoglm_gguf.cli import main
from autoglm_gguf.imatrix import ImatrixError, collect, load_imatrix, read_imatrix_raw, write_imatrix

SYSTEM = ("You are a phone agent. Look at the screen, think, then give exactly one operation such as "
          "do(action=\"Tap\", element=[500,300]) or finish(message=\"done\").")
TEXT = ("Open the Settings app, then tap Wi-Fi and turn it on. Screen: 1080x2400, battery 87%. 你好！ "
        "If a dialog appears, confirm it. def f(x):\n\treturn x ** 2")

# HF module suffix -> GGUF weight name part (gate and up are one fused matrix in both)
HF_TO_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, width, height])
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


class Reference:
    """transformers (float64) with forward hooks summing x^2 per input column of every decoder Linear."""

    def __init__(self, ckpt: Path):
        self.tok = AutoTokenizer.from_pretrained(ckpt)
        self.proc = Glm4vImageProcessorPil.from_pretrained(ckpt)
        self.hf = Glm4vForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float64).eval()
        self.image_id = self.tok.convert_tokens_to_ids("<|image|>")
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}
        pattern = re.compile(r"language_model\.layers\.(\d+)\.(.+)$")
        for name, mod in self.hf.named_modules():
            m = pattern.search(name)
            if m and m.group(2) in HF_TO_GGUF:
                mod.register_forward_hook(self._hook(f"blk.{m.group(1)}.{HF_TO_GGUF[m.group(2)]}.weight"))
        self.hf.lm_head.register_forward_hook(self._hook("output.weight"))

    def _hook(self, name):
        def hook(module, inputs, output):
            x = inputs[0].detach().double().reshape(-1, inputs[0].shape[-1])
            self.sums[name] = self.sums.get(name, 0) + (x * x).sum(0).numpy()
            self.counts[name] = self.counts.get(name, 0) + x.shape[0]
        return hook

    def run(self, messages, images=()):
        """Token ids of the prompt (image tokens expanded) after running it through the hooked model."""
        self.sums, self.counts = {}, {}
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        extra = {}
        ids: list[int] = []
        if images:
            px = self.proc(images=[Image.fromarray(a) for a in images], return_tensors="pt")
            grids = px["image_grid_thw"]
            for i, part in enumerate(text.split("<|image|>")):
                ids += self.tok(part, add_special_tokens=False)["input_ids"]
                if i < len(grids):
                    ids += [self.image_id] * (int(grids[i].prod()) // 4)
            mm = [1 if t == self.image_id else 0 for t in ids]
            extra = {"pixel_values": px["pixel_values"].double(), "image_grid_thw": grids,
                     "mm_token_type_ids": torch.tensor([mm])}
        else:
            ids = self.tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            self.hf(input_ids=torch.tensor([ids]), **extra)
        return ids


@pytest.fixture(scope="module", params=["tiny", "alt"])
def case(request, tiny_checkpoint_f32, alt_checkpoint, convert_tiny):
    ckpt = tiny_checkpoint_f32 if request.param == "tiny" else alt_checkpoint
    text, mmproj = convert_tiny(ckpt, "f32", "f32")
    return ckpt, text, mmproj, Reference(ckpt)


@pytest.fixture(scope="module")
def model(case):
    return _core.TextModel(str(case[1]), n_threads=2)


def text_messages():
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TEXT}]


def assert_matches(stats, ref: Reference, names):
    assert sorted(stats) == sorted(names)
    for name in names:
        ours, count = stats[name]
        assert ours.dtype == np.float64 and ours.shape == ref.sums[name].shape, name
        assert count == ref.counts[name], name
        err = np.abs(ours - ref.sums[name]).max() / np.abs(ref.sums[name]).max()
        assert err <= 1e-4, (name, err)


def ref_layers(case) -> int:
    return case[3].hf.config.text_config.num_hidden_layers


def decoder_names(n_layer):
    return [f"blk.{i}.{w}.weight" for i in range(n_layer) for w in HF_TO_GGUF.values()]


@pytest.mark.parametrize("process_output", [False, True])
def test_text_prompt_matches_transformers(case, model, process_output):
    ref = case[3]
    ids = ref.run(text_messages())
    s = _core.Session(model, n_ctx=512, kv_type="f32")
    s.imatrix_start(process_output)
    assert s.imatrix_active
    assert s.imatrix_eval(ids) == len(ids)
    names = decoder_names(model.hparams["n_layer"]) + (["output.weight"] if process_output else [])
    assert_matches(s.imatrix_stats(), ref, names)


def test_statistics_accumulate_stop_and_reset(case, model):
    ids = case[3].run(text_messages())
    s = _core.Session(model, n_ctx=512, kv_type="f32", n_batch=64)   # several micro-batches per prompt
    s.imatrix_start()
    s.imatrix_eval(ids)
    one = s.imatrix_stats()
    s.imatrix_eval(ids)   # from an empty context again: exactly twice the statistics
    two = s.imatrix_stats()
    for name, (sums, count) in one.items():
        assert two[name][1] == 2 * count
        np.testing.assert_allclose(two[name][0], 2 * sums, rtol=1e-12)
    s.imatrix_stop()
    assert not s.imatrix_active
    s.eval_tokens(ids, "none")   # not collecting: nothing changes
    assert all(s.imatrix_stats()[n][1] == two[n][1] for n in two)
    s.imatrix_reset()
    assert s.imatrix_stats() == {}


def test_micro_batches_under_16_rows_are_ignored(case, model):
    ids = case[3].run(text_messages())
    assert len(ids) > 40
    s = _core.Session(model, n_ctx=512, kv_type="f32", n_batch=15)
    s.imatrix_start()
    s.imatrix_eval(ids)
    assert s.imatrix_stats() == {}   # every micro-batch had < 16 rows (generation-like): nothing
    s = _core.Session(model, n_ctx=512, kv_type="f32", n_batch=16)
    s.imatrix_start()
    s.imatrix_eval(ids)
    counts = {n: c for n, (_, c) in s.imatrix_stats().items()}
    assert sorted(counts) == sorted(decoder_names(ref_layers(case)))
    assert set(counts.values()) == {len(ids) // 16 * 16}   # the short last micro-batch is left out
    s.imatrix_eval(ids[:15])
    assert {c for _, c in s.imatrix_stats().values()} == {len(ids) // 16 * 16}


def test_image_prompt_matches_transformers(case):
    _, text, mmproj, ref = case
    arr = picture(112, 224)
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": TEXT}]}]
    ids = ref.run(messages, [arr])
    n_image = ids.count(ref.image_id)
    assert n_image >= 16
    llm = AutoGLM(text, mmproj_path=mmproj, n_ctx=512, n_threads=2, kv_type="f32", vision_matmul_type="file")
    conv = Conversation([messages[0], {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": _data_url(arr)}}, {"type": "text", "text": TEXT}]}], "test")
    got = collect(llm, [conv])
    assert got.n_conversations == 1 and got.n_tokens == len(ids)
    stats = {n: (got.sums[n], got.counts[n]) for n in got.sums}
    assert_matches(stats, ref, decoder_names(llm.hparams["n_layer"]))
    # Without the system message the text before the image is a few tokens: that micro-batch does not count.
    short = Conversation([conv.messages[1]], "short")
    got = collect(llm, [short])
    head = _core.tokenize_around_images(llm._model, llm.apply_chat_template([messages[1]]), 1)[0]
    assert 0 < len(head) < 16 and set(got.counts.values()) == {got.n_tokens - len(head)}


def _data_url(arr: np.ndarray) -> str:
    import base64
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_profiler_and_collection_coexist(case, tmp_path):
    """AUTOGLM_PROFILE installs its own eval callback; with both on, one session callback serves both."""
    ids = case[3].run(text_messages())
    code = f"""
import json, sys
from autoglm_gguf import _core
m = _core.TextModel({str(case[1])!r}, n_threads=2)
s = _core.Session(m, n_ctx=512, kv_type="f32")
s.imatrix_start()
s.imatrix_eval({ids!r})
print(json.dumps({{n: [float(v.sum()), c] for n, (v, c) in s.imatrix_stats().items()}}))
"""
    def run(profile):
        env = {**__import__("os").environ, "AUTOGLM_PROFILE": profile}
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                           check=False)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout), p.stderr
    on, err_on = run("1")
    off, err_off = run("0")
    assert "autoglm profile [text session]" in err_on and "MUL_MAT" in err_on
    assert "autoglm profile" not in err_off
    assert on == off and sorted(on) == sorted(decoder_names(ref_layers(case)))


# ------------------------------------------------------------------------------------------ the file
def _raw_sums(n_cols=(8, 12), seed=0):
    rng = np.random.default_rng(seed)
    names = ["blk.1.attn_q.weight", "blk.0.ffn_down.weight", "blk.0.attn_q.weight"]
    sums = {n: rng.random(n_cols[i % 2]) * 100 for i, n in enumerate(names)}
    counts = {n: 40 + i for i, n in enumerate(names)}
    return sums, counts


def test_file_layout_is_llamacpps(tmp_path):
    sums, counts = _raw_sums()
    counts["blk.0.attn_q.weight"] = 0
    out = tmp_path / "m.imatrix.gguf"
    write_imatrix(out, sums, counts, ["calib.jsonl"], 3, 517)
    r = gguf.GGUFReader(out)
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    assert keys == ["general.type", "imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"]
    assert r.fields["general.type"].contents() == "imatrix"
    assert r.fields["imatrix.datasets"].contents() == ["calib.jsonl"]
    assert r.fields["imatrix.chunk_count"].types == [gguf.GGUFValueType.UINT32]
    assert (r.fields["imatrix.chunk_count"].contents(), r.fields["imatrix.chunk_size"].contents()) == (3, 517)
    expected = [f"{n}{s}" for n in sorted(sums) for s in (".in_sum2", ".counts")]
    assert [t.name for t in r.tensors] == expected
    for t in r.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        name = t.name.rsplit(".", 1)[0]
        # ggml shape [ncols, 1] / [1, 1]; ggml's writer (llama-imatrix) stores them with n_dims = 1
        if t.name.endswith(".in_sum2"):
            assert list(t.shape) == [len(sums[name])]
            np.testing.assert_array_equal(t.data.reshape(-1), sums[name].astype(np.float32))
        else:
            assert list(t.shape) == [1]
            assert t.data.reshape(-1).tolist() == [counts[name]]

    im = load_imatrix(out)
    assert (im.datasets, im.chunk_count, im.chunk_size) == (["calib.jsonl"], 3, 517)
    assert sorted(im.entries) == sorted(sums)
    for name, v in im.entries.items():
        assert v.dtype == np.float32
        if counts[name]:
            np.testing.assert_array_equal(v, sums[name].astype(np.float32) / np.float32(counts[name]))
        else:
            np.testing.assert_array_equal(v, np.ones_like(v))   # as llama-quantize: no rows -> neutral
    raw, *_ = read_imatrix_raw(out)
    for name in sums:
        np.testing.assert_array_equal(raw[name][0][0], sums[name].astype(np.float32))


class GGUFC:
    """llama.cpp's own GGUF reader and writer (ggml's gguf C API, from the llama-cpp-python peer), driven the
    way common_imatrix_load and IMatrixCollector::save_imatrix drive them."""

    def __init__(self):
        import ctypes as C
        import importlib.util

        spec = importlib.util.find_spec("llama_cpp")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("llama-cpp-python (the test extra) is not installed")
        lib = C.CDLL(str(Path(next(iter(spec.submodule_search_locations))) / "lib" / "libggml-base.so"))
        P, I64 = C.c_void_p, C.c_int64
        self.C, self.lib = C, lib

        class InitParams(C.Structure):
            _fields_ = [("no_alloc", C.c_bool), ("ctx", C.POINTER(P))]

        class GgmlParams(C.Structure):
            _fields_ = [("mem_size", C.c_size_t), ("mem_buffer", P), ("no_alloc", C.c_bool)]

        self.InitParams, self.GgmlParams = InitParams, GgmlParams
        for name, res, args in [
            ("gguf_init_from_file", P, [C.c_char_p, InitParams]), ("gguf_init_empty", P, []), ("gguf_free", None, [P]),
            ("gguf_find_key", I64, [P, C.c_char_p]), ("gguf_get_kv_type", C.c_int, [P, I64]),
            ("gguf_get_arr_type", C.c_int, [P, I64]), ("gguf_get_arr_n", C.c_size_t, [P, I64]),
            ("gguf_get_arr_str", C.c_char_p, [P, I64, C.c_size_t]), ("gguf_get_val_u32", C.c_uint32, [P, I64]),
            ("gguf_get_val_str", C.c_char_p, [P, I64]), ("gguf_get_n_tensors", I64, [P]),
            ("gguf_get_tensor_name", C.c_char_p, [P, I64]), ("gguf_get_tensor_type", C.c_int, [P, I64]),
            ("gguf_set_val_str", None, [P, C.c_char_p, C.c_char_p]), ("gguf_set_val_u32", None, [P, C.c_char_p, C.c_uint32]),
            ("gguf_set_arr_str", None, [P, C.c_char_p, C.POINTER(C.c_char_p), C.c_size_t]),
            ("gguf_add_tensor", None, [P, P]), ("gguf_write_to_file", C.c_bool, [P, C.c_char_p, C.c_bool]),
            ("ggml_init", P, [GgmlParams]), ("ggml_free", None, [P]), ("ggml_get_tensor", P, [P, C.c_char_p]),
            ("ggml_nelements", I64, [P]), ("ggml_get_data_f32", C.POINTER(C.c_float), [P]),
            ("ggml_new_tensor_2d", P, [P, C.c_int, I64, I64]), ("ggml_set_name", P, [P, C.c_char_p])]:
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args

    def read(self, path):
        """(general.type, datasets, chunk_count, chunk_size, {tensor name: (ggml type, float32 data)})."""
        C, lib = self.C, self.lib
        ctx = C.c_void_p()
        g = lib.gguf_init_from_file(str(path).encode(), self.InitParams(False, C.pointer(ctx)))
        assert g, "ggml's gguf reader refused the file"
        try:
            key = lambda k: lib.gguf_find_key(g, k.encode())
            ds = key("imatrix.datasets")
            assert lib.gguf_get_kv_type(g, ds) == 9 and lib.gguf_get_arr_type(g, ds) == 8   # array of string
            datasets = [lib.gguf_get_arr_str(g, ds, i).decode() for i in range(lib.gguf_get_arr_n(g, ds))]
            tensors = {}
            for i in range(lib.gguf_get_n_tensors(g)):
                name = lib.gguf_get_tensor_name(g, i)
                t = lib.ggml_get_tensor(ctx, name)
                data = np.ctypeslib.as_array(lib.ggml_get_data_f32(t), shape=(lib.ggml_nelements(t),)).copy()
                tensors[name.decode()] = (lib.gguf_get_tensor_type(g, i), data)
            return (lib.gguf_get_val_str(g, key("general.type")).decode(), datasets,
                    lib.gguf_get_val_u32(g, key("imatrix.chunk_count")), lib.gguf_get_val_u32(g, key("imatrix.chunk_size")),
                    tensors)
        finally:
            lib.gguf_free(g)
            lib.ggml_free(ctx)

    def write(self, path, sums, counts, datasets, chunk_count, chunk_size):
        C, lib = self.C, self.lib
        ctx = lib.ggml_init(self.GgmlParams(1 << 20, None, False))
        g = lib.gguf_init_empty()
        try:
            lib.gguf_set_val_str(g, b"general.type", b"imatrix")
            arr = (C.c_char_p * len(datasets))(*[d.encode() for d in datasets])
            lib.gguf_set_arr_str(g, b"imatrix.datasets", arr, len(datasets))
            lib.gguf_set_val_u32(g, b"imatrix.chunk_count", chunk_count)
            lib.gguf_set_val_u32(g, b"imatrix.chunk_size", chunk_size)
            for name in sorted(sums):
                for suffix, values, ne0 in ((".in_sum2", sums[name], len(sums[name])), (".counts", [counts[name]], 1)):
                    t = lib.ggml_new_tensor_2d(ctx, 0, ne0, 1)   # GGML_TYPE_F32
                    lib.ggml_set_name(t, (name + suffix).encode())
                    np.ctypeslib.as_array(lib.ggml_get_data_f32(t), shape=(ne0,))[:] = np.asarray(values, np.float32)
                    lib.gguf_add_tensor(g, t)
            assert lib.gguf_write_to_file(g, str(path).encode(), False)
        finally:
            lib.gguf_free(g)
            lib.ggml_free(ctx)


@pytest.mark.llamacpp
def test_llamacpps_gguf_code_reads_ours_and_we_read_its(tmp_path):
    ggufc = GGUFC()
    sums, counts = _raw_sums(seed=5)
    ours = tmp_path / "ours.gguf"
    write_imatrix(ours, sums, counts, ["calib.jsonl", "more.jsonl"], 4, 300)
    kind, datasets, chunks, size, tensors = ggufc.read(ours)
    assert (kind, datasets, chunks, size) == ("imatrix", ["calib.jsonl", "more.jsonl"], 4, 300)
    assert list(tensors) == [f"{n}{s}" for n in sorted(sums) for s in (".in_sum2", ".counts")]
    for name in sums:
        assert tensors[name + ".in_sum2"][0] == 0 and tensors[name + ".counts"][0] == 0   # F32
        np.testing.assert_array_equal(tensors[name + ".in_sum2"][1], sums[name].astype(np.float32))
        assert tensors[name + ".counts"][1].tolist() == [counts[name]]

    theirs = tmp_path / "theirs.gguf"
    ggufc.write(theirs, sums, counts, ["llama.txt"], 9, 512)
    im = load_imatrix(theirs)
    assert (im.datasets, im.chunk_count, im.chunk_size) == (["llama.txt"], 9, 512)
    for name in sums:
        np.testing.assert_array_equal(im.entries[name], sums[name].astype(np.float32) / np.float32(counts[name]))
    # the same statistics written by both give the same bytes
    ggufc.write(theirs, sums, counts, ["calib.jsonl", "more.jsonl"], 4, 300)
    assert theirs.read_bytes() == ours.read_bytes()


def test_load_a_file_with_per_expert_counts(tmp_path):
    """llama-imatrix writes n_mat counts for stacked expert weights; each matrix divides by its own."""
    out = tmp_path / "moe.gguf"
    w = gguf.GGUFWriter(str(out), arch="")
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", ["a.txt", "b.txt"])
    w.add_uint32("imatrix.chunk_count", 7)
    w.add_uint32("imatrix.chunk_size", 512)
    w.add_tensor("blk.0.ffn_up_exps.weight.in_sum2", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.add_tensor("blk.0.ffn_up_exps.weight.counts", np.array([[2.0], [0.0], [4.0]], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    im = load_imatrix(out)
    assert im.datasets == ["a.txt", "b.txt"] and im.chunk_count == 7
    np.testing.assert_array_equal(im.entries["blk.0.ffn_up_exps.weight"],
                                  np.array([0, .5, 1, 1.5, 1, 1, 1, 1, 2, 2.25, 2.5, 2.75], dtype=np.float32))


def test_wrong_files_are_clear_errors(tmp_path, convert_tiny, tiny_checkpoint_f32):
    with pytest.raises(ImatrixError, match="does not exist"):
        load_imatrix(tmp_path / "nope.gguf")
    legacy = tmp_path / "imatrix.dat"
    legacy.write_bytes(b"\x01\x00\x00\x00" + b"\x00" * 20)
    with pytest.raises(ImatrixError, match="not a GGUF file.*llama-imatrix --in-file"):
        load_imatrix(legacy)
    text, _ = convert_tiny(tiny_checkpoint_f32, "f32", "f32")
    with pytest.raises(ImatrixError, match="not an importance matrix|missing imatrix metadata"):
        load_imatrix(text)
    truncated = tmp_path / "cut.gguf"
    sums, counts = _raw_sums()
    write_imatrix(truncated, sums, counts, ["x"], 1, 1)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(ImatrixError):
        load_imatrix(truncated)
    with pytest.raises(ValueError, match="datasets"):
        write_imatrix(tmp_path / "e.gguf", sums, counts, [], 1, 1)
    assert not (tmp_path / "e.gguf").exists()


def test_write_is_atomic(tmp_path, monkeypatch):
    sums, counts = _raw_sums()
    out = tmp_path / "im.gguf"
    write_imatrix(out, sums, counts, ["old"], 1, 1)
    before = out.read_bytes()

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_imatrix(out, sums, counts, ["new"], 2, 2)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["im.gguf"]


# ------------------------------------------------------------------------------------------ calibration + CLI
def test_builtin_calibration_round_trips_through_a_file(tmp_path):
    convs = builtin_calibration(width=112, height=224)
    assert len(convs) >= 20
    langs = {c.where.split()[1] for c in convs}
    assert langs == {"cn", "en"}
    for c in convs:
        assert c.messages[0]["role"] == "system" and c.messages[-1]["role"] == "assistant"
        images = [p for m in c.messages if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image_url"]
        assert len(images) == 1 and c.messages[-2]["role"] == "user"   # only the newest screenshot, as Open-AutoGLM
    assert any("设置" in json.dumps(c.messages, ensure_ascii=False) for c in convs)
    path = write_calibration(tmp_path / "calib.jsonl", convs)
    back = load_calibration(path)
    assert len(back) == len(convs)
    first = back[0].messages[-2]["content"][0]["image_url"]["url"]
    assert Path(first).is_file() and Path(first).parent.name == "calib-images"
    assert [m["role"] for m in back[3].messages] == [m["role"] for m in convs[3].messages]


def test_builtin_calibration_collects(case):
    convs = builtin_calibration(width=112, height=224)
    pick = [next(c for c in convs if " cn " in c.where), next(c for c in convs if " en " in c.where)]
    llm = AutoGLM(case[1], mmproj_path=case[2], n_ctx=4096, n_threads=2)
    got = collect(llm, pick)
    assert got.n_conversations == 2 and not got.skipped
    assert sorted(got.sums) == sorted(decoder_names(ref_layers(case)))
    assert 0 < min(got.counts.values()) == max(got.counts.values()) <= got.n_tokens


def write_jsonl(path: Path, lines) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines) + "\n",
                    encoding="utf-8")
    return path


def test_cli_end_to_end_with_an_image(case, tmp_path, capsys):
    _, text, mmproj, ref = case
    arr = picture(112, 224, seed=3)
    (tmp_path / "shots").mkdir()
    Image.fromarray(arr).save(tmp_path / "shots" / "a.png")
    image_line = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "shots/a.png"}}, {"type": "text", "text": TEXT}]}]}
    calib = write_jsonl(tmp_path / "calib.jsonl", [image_line, "", {"messages": text_messages()}])
    out = tmp_path / "out.imatrix.gguf"
    rc = main(["imatrix", "-m", str(text), "--mmproj", str(mmproj), "-f", str(calib), "-o", str(out), "-t", "2",
               "-q"])
    assert rc == 0, capsys.readouterr().err
    n_image = len(ref.run(image_line["messages"][:1] + [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": TEXT}]}], [arr]))
    n_text = len(ref.run(text_messages()))
    im, (raw, datasets, chunks, chunk_size) = load_imatrix(out), read_imatrix_raw(out)
    assert datasets == [str(calib)] and chunks == 2 and chunk_size == round((n_image + n_text) / 2)
    assert sorted(raw) == sorted(decoder_names(ref_layers(case)))
    assert {int(c[0]) for _, c in raw.values()} == {n_image + n_text}
    # the file holds the sums the runtime collected for the same conversations
    llm = AutoGLM(text, mmproj_path=mmproj, n_ctx=8192, n_threads=2)
    got = collect(llm, load_calibration(calib))
    for name, (sums, counts) in raw.items():
        np.testing.assert_allclose(sums[0], got.sums[name].astype(np.float32), rtol=1e-6)
        np.testing.assert_allclose(im.entries[name], sums[0] / counts[0], rtol=1e-6)


@pytest.mark.parametrize("lines, message", [
    ([], "has no conversations"),
    ([{"messages": [{"role": "user", "content": "hi"}]}, '{"messages": [', ""], r"line 2: not valid JSON"),
    ([{"nothing": 1}], r"line 1: expected a non-empty \"messages\" list"),
    ([{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "gone.png"}}]}]}],
     r"line 1: message 0 part 0: image file .*gone.png does not exist"),
    ([{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}],
     "offline"),
])
def test_cli_calibration_errors_leave_no_output(case, tmp_path, capsys, lines, message):
    calib = write_jsonl(tmp_path / "calib.jsonl", lines) if lines else (tmp_path / "calib.jsonl")
    if not lines:
        calib.write_text("\n\n", encoding="utf-8")
    out = tmp_path / "out.gguf"
    rc = main(["imatrix", "-m", str(case[1]), "-f", str(calib), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.jsonl"]


def test_cli_argument_errors(case, tmp_path, capsys):
    out = tmp_path / "out.gguf"
    assert main(["imatrix", "-m", str(case[1]), "-o", str(out)]) == 1
    assert "-f CALIB.jsonl, or --builtin-calibration" in capsys.readouterr().err
    assert main(["imatrix", "-m", str(case[1]), "-f", str(tmp_path / "none.jsonl"), "-o", str(out)]) == 1
    assert "none.jsonl does not exist" in capsys.readouterr().err
    out.write_bytes(b"keep")
    calib = write_jsonl(tmp_path / "c.jsonl", [{"messages": text_messages()}])
    assert main(["imatrix", "-m", str(case[1]), "-f", str(calib), "-o", str(out)]) == 1
    assert "--force" in capsys.readouterr().err and out.read_bytes() == b"keep"
    img = write_jsonl(tmp_path / "i.jsonl", [{"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": _data_url(picture(56, 56))}}]}]}])
    alone = tmp_path / "alone" / "model.gguf"   # no mmproj-*.gguf beside it to default to
    alone.parent.mkdir()
    shutil.copy(case[1], alone)
    assert main(["imatrix", "-m", str(alone), "-f", str(img), "-o", str(tmp_path / "x.gguf")]) == 1
    assert "no vision projector: pass --mmproj" in capsys.readouterr().err
    assert not (tmp_path / "x.gguf").exists()


def test_load_calibration_rejects_bad_shapes(tmp_path):
    bad = write_jsonl(tmp_path / "b.jsonl", [{"messages": [{"role": "user", "content": [{"type": "audio"}]}]}])
    with pytest.raises(CalibrationError, match="line 1: message 0 part 0: unsupported content part"):
        load_calibration(bad)
