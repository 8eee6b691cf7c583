"""Tiny random Glm4v checkpoints (autoglm_gguf._tiny.checkpoint) against transformers 5.23.

Checks that the generated checkpoint loads into ``Glm4vForConditionalGeneration`` with no
missing / unexpected / mismatched keys (bf16, f16, f32, sharded), that its tokenizer, chat
template and image processor work in transformers, and that greedy decoding of the tiny
model has clear top-1/top-2 margins (so runtime parity tests can compare tokens).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PIL_Image = pytest.importorskip("PIL.Image")

from transformers import (  # noqa: E402
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    Glm4vForConditionalGeneration,
    Glm4vProcessor,
)
from transformers.utils import logging as hf_logging  # noqa: E402

import autoglm_gguf._tiny.checkpoint as tcp  # noqa: E402
from autoglm_gguf._tiny.tokenizer import GLM_SPECIAL_TOKENS, N_BPE  # noqa: E402
from autoglm_gguf._tiny.weights import f32_to_bf16_bits  # noqa: E402

hf_logging.disable_progress_bar()

# ----------------------------------------------------------------------------------------
# fixtures / helpers (to be moved to conftest.py)
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """Default tiny checkpoint (bf16, seed 0, with tokenizer)."""
    return tcp.write_checkpoint(tmp_path_factory.mktemp("tiny_glm4v") / "ckpt")


@pytest.fixture(scope="session")
def tiny_model_f32(tiny_ckpt):
    """The default tiny checkpoint loaded in float32 (reference numerics)."""
    return Glm4vForConditionalGeneration.from_pretrained(tiny_ckpt, dtype=torch.float32).eval()


def _image_only_processor(path):
    """Glm4vProcessor without its video processor.

    transformers' AutoProcessor for glm4v always loads ``Glm4vVideoProcessor``, which needs
    torchvision (no CPU wheel here). Dropping ``video_processor`` from ``__init__``'s signature
    makes ProcessorMixin load only the image processor (the PIL one, ``Glm4vImageProcessorPil``,
    which AutoImageProcessor picks when torchvision is missing) and the tokenizer.
    """
    if importlib.util.find_spec("torchvision") is not None:
        return transformers.AutoProcessor.from_pretrained(path)

    class Glm4vImageOnlyProcessor(Glm4vProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return Glm4vImageOnlyProcessor.from_pretrained(path)


def _test_image(w=112, h=56):
    rng = np.random.default_rng(1234)
    return PIL_Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))


IMAGE_MESSAGES = [
    {"role": "system", "content": "You are a phone agent."},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]},
]
EXPECTED_IMAGE_PROMPT = (
    "[gMASK]<sop><|system|>\nYou are a phone agent.<|user|>\n"
    "<|begin_of_image|><|image|><|end_of_image|>Hi<|assistant|>\n"
)


def _greedy(model, inputs, n=16):
    out = model.generate(
        **inputs,
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
    )
    new = out.sequences[0, inputs["input_ids"].shape[1] :].tolist()
    margins = []
    for s in out.scores:
        top = torch.topk(s[0].float(), 2).values
        margins.append(float(top[0] - top[1]))
    return new, margins


def _header(path: Path) -> dict:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))


# ----------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------


def test_make_config_defaults():
    cfg = tcp.make_config()
    assert cfg["model_type"] == "glm4v"
    assert cfg["architectures"] == ["Glm4vForConditionalGeneration"]
    tc, vc = cfg["text_config"], cfg["vision_config"]
    assert (
        tc["hidden_size"],
        tc["num_hidden_layers"],
        tc["num_attention_heads"],
        tc["num_key_value_heads"],
    ) == (
        64,
        2,
        4,
        2,
    )
    rp = tc["rope_parameters"]
    head_dim = tc["hidden_size"] // tc["num_attention_heads"]
    assert sum(rp["mrope_section"]) * 2 == int(head_dim * rp["partial_rotary_factor"])
    # legacy layout agrees with the transformers-5 layout
    assert tc["rope_theta"] == rp["rope_theta"]
    assert tc["partial_rotary_factor"] == rp["partial_rotary_factor"]
    assert tc["rope_scaling"]["mrope_section"] == rp["mrope_section"]
    assert vc["out_hidden_size"] == tc["hidden_size"]
    assert (vc["image_size"] // vc["patch_size"]) ** 2 == 64
    n_tok = N_BPE + len(GLM_SPECIAL_TOKENS)
    assert tc["vocab_size"] >= n_tok and tc["vocab_size"] % 64 == 0
    assert cfg["tie_word_embeddings"] is False


def test_make_config_overrides_and_validation():
    cfg = tcp.make_config(text={"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 2})
    assert cfg["text_config"]["rope_parameters"]["mrope_section"] == [8, 12, 12]  # GLM-4.1V's
    assert cfg["vision_config"]["out_hidden_size"] == 4096
    cfg = tcp.make_config(text={"rope_theta": 500000.0})
    assert cfg["text_config"]["rope_parameters"]["rope_theta"] == 500000.0
    assert cfg["text_config"]["rope_theta"] == 500000.0
    with pytest.raises(ValueError):
        tcp.make_config(text={"rope_parameters": {"mrope_section": [1, 1, 1]}})  # sums to 3 != 4
    with pytest.raises(ValueError):
        tcp.make_config(text={"num_key_value_heads": 3})
    with pytest.raises(ValueError):
        tcp.make_config(vision={"out_hidden_size": 32})


# ----------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype,max_shard_bytes,torch_dtype",
    [
        ("bf16", None, torch.bfloat16),
        ("f16", None, torch.float16),
        ("f32", None, torch.float32),
        ("bf16", 40_000, torch.bfloat16),
    ],
)
def test_loads_in_transformers(tmp_path, dtype, max_shard_bytes, torch_dtype):
    out = tcp.write_checkpoint(tmp_path / "ck", dtype=dtype, max_shard_bytes=max_shard_bytes, tokenizer=False)
    model, info = Glm4vForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"], info["missing_keys"]
    assert not info["unexpected_keys"], info["unexpected_keys"]
    assert not info["mismatched_keys"], info["mismatched_keys"]
    assert not info["error_msgs"], info["error_msgs"]
    assert model.dtype == torch_dtype

    # exactly the tensors (names and shapes) transformers' own model has, nothing more
    with torch.device("meta"):
        ref = Glm4vForConditionalGeneration(AutoConfig.from_pretrained(out))
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    files = sorted(out.glob("*.safetensors"))
    got = {}
    for f in files:
        h = _header(f)
        assert h.pop("__metadata__") == {"format": "pt"}
        assert {v["dtype"] for v in h.values()} == {tcp._DTYPES[dtype][0]}
        got.update({k: tuple(v["shape"]) for k, v in h.items()})
    assert got == ref_shapes

    if max_shard_bytes:
        assert len(files) > 1
        assert [f.name for f in files] == [
            f"model-{i + 1:05d}-of-{len(files):05d}.safetensors" for i in range(len(files))
        ]
        index = json.loads((out / "model.safetensors.index.json").read_text())
        assert set(index["weight_map"]) == set(ref_shapes)
        assert index["metadata"]["total_size"] == sum(
            math.prod(s) * tcp._DTYPES[dtype][1] for s in ref_shapes.values()
        )
        assert not (out / "model.safetensors").exists()
    else:
        assert [f.name for f in files] == ["model.safetensors"]


def test_half_dtypes_are_rounded_f32(tmp_path):
    from safetensors.numpy import load_file

    f32 = load_file(tcp.write_checkpoint(tmp_path / "f32", dtype="f32") / "model.safetensors")
    from safetensors.torch import load_file as load_torch

    bf16 = load_torch(tcp.write_checkpoint(tmp_path / "bf16", dtype="bf16") / "model.safetensors")
    f16 = load_torch(tcp.write_checkpoint(tmp_path / "f16", dtype="f16") / "model.safetensors")
    for name, arr in f32.items():
        t = torch.from_numpy(arr)
        assert torch.equal(t.to(torch.bfloat16), bf16[name]), name  # torch casts round to nearest even
        assert torch.equal(t.to(torch.float16), f16[name]), name
    # init recipe: norms around 1, biases small and non-zero, lm_head rows of unused ids zero
    norm = f32["model.language_model.norm.weight"]
    assert abs(norm.mean() - 1) < 0.1 and norm.std() > 0.02
    bias = f32["model.language_model.layers.0.self_attn.q_proj.bias"]
    assert np.all(bias != 0) and 0.02 < bias.std() < 0.5
    lm = f32["lm_head.weight"]
    n_tok = N_BPE + len(GLM_SPECIAL_TOKENS)
    assert np.all(lm[n_tok:] == 0) and np.all(lm[:n_tok].std(axis=1) > 0)


def test_bf16_bits_rne():
    x = np.array([1.0, 1.00390625, 1.01171875, -2.5, 3.0e38, np.inf, -0.0, np.nan], dtype=np.float32)
    got = f32_to_bf16_bits(x)
    ref = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(got[:-1], ref[:-1])
    assert (got[-1] & 0x7F80) == 0x7F80 and (got[-1] & 0x7F) != 0  # still a NaN


def test_deterministic_and_independent(tmp_path):
    a = tcp.write_checkpoint(tmp_path / "a", seed=7, tokenizer=False)
    b = tcp.write_checkpoint(tmp_path / "b", seed=7, tokenizer=False)
    c = tcp.write_checkpoint(tmp_path / "c", seed=8, tokenizer=False)

    def digest(p):
        return hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest()

    assert digest(a) == digest(b) != digest(c)
    # a tensor depends only on (seed, name, shape): a 3-layer model shares layer 0 with the 2-layer one
    d = tcp.write_checkpoint(
        tmp_path / "d", tcp.make_config(text={"num_hidden_layers": 3}), seed=7, tokenizer=False
    )
    from safetensors.torch import load_file

    ta, td = load_file(a / "model.safetensors"), load_file(d / "model.safetensors")
    name = "model.language_model.layers.0.mlp.gate_up_proj.weight"
    assert torch.equal(ta[name], td[name])


def test_rope_parameters_reach_transformers(tmp_path):
    cfg = tcp.make_config(
        text={
            "hidden_size": 96,
            "num_attention_heads": 6,
            "num_key_value_heads": 3,
            "rope_parameters": {
                "rope_theta": 500000.0,
                "mrope_section": [2, 1, 3],
                "partial_rotary_factor": 0.75,
            },
        },
        vision={"depth": 1, "hidden_size": 48, "num_heads": 3, "attention_bias": True},
    )
    out = tcp.write_checkpoint(tmp_path / "ck", cfg, dtype="f32", tokenizer=False)
    model, info = Glm4vForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    rot = model.model.language_model.rotary_emb
    assert list(rot.mrope_section) == [2, 1, 3]
    head_dim, rot_dim = 16, 12
    expect = 1.0 / 500000.0 ** (torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim)
    assert rot.inv_freq.shape == (rot_dim // 2,) and torch.allclose(rot.inv_freq, expect)
    assert head_dim == model.model.language_model.layers[0].self_attn.head_dim
    assert "model.visual.blocks.0.attn.qkv.bias" in model.state_dict()


def test_streaming_memory_is_bounded(tmp_path):
    """A 1024-wide, 8-layer, 151552-vocab checkpoint (~0.8 GB bf16) is written with a small RSS."""
    script = textwrap.dedent(
        f"""
        import sys
        import autoglm_gguf._tiny.checkpoint as tc
        cfg = tc.make_config(
            text=dict(hidden_size=1024, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                      intermediate_size=2816, vocab_size=151552),
            vision=dict(depth=2, hidden_size=256, num_heads=4, intermediate_size=2816, image_size=336))
        out = tc.write_checkpoint({str(tmp_path / "mid")!r}, cfg, dtype="bf16", tokenizer=False)
        size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
        assert "torch" not in sys.modules and "transformers" not in sys.modules
        # VmHWM, not ru_maxrss: Linux carries the parent's (pytest + torch) peak RSS across exec
        try:
            hwm_kib = int([l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1])
        except OSError:  # not Linux
            import resource
            hwm_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
        print(size, hwm_kib // 1024)
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    size, rss_mib = map(int, res.stdout.split())
    assert size > 700 * 2**20
    assert rss_mib < 200, f"peak RSS {rss_mib} MiB while writing {size / 2**20:.0f} MiB"


# ----------------------------------------------------------------------------------------
# tokenizer, chat template, processor
# ----------------------------------------------------------------------------------------


def test_tokenizer(tiny_ckpt):
    tok = AutoTokenizer.from_pretrained(tiny_ckpt)
    assert len(tok) == N_BPE + len(GLM_SPECIAL_TOKENS)
    ids = tok.convert_tokens_to_ids(list(GLM_SPECIAL_TOKENS))
    assert ids == list(range(N_BPE, N_BPE + len(GLM_SPECIAL_TOKENS)))
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id == tok.eos_token_id == N_BPE
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    assert cfg["image_token_id"] == tok.convert_tokens_to_ids("<|image|>")
    assert cfg["image_start_token_id"] == tok.convert_tokens_to_ids("<|begin_of_image|>")
    assert cfg["image_end_token_id"] == tok.convert_tokens_to_ids("<|end_of_image|>")
    assert cfg["video_token_id"] == tok.convert_tokens_to_ids("<|video|>")
    gen = json.loads((tiny_ckpt / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.convert_tokens_to_ids(
        ["<|endoftext|>", "<|user|>", "<|observation|>", GLM_SPECIAL_TOKENS[-1]]
    )
    text = "Hello world, 你好！Café 12345 def f(x):\n\treturn x  # ok\n"
    enc = tok(text, add_special_tokens=True)["input_ids"]
    assert tok.decode(enc) == text
    assert max(enc) < N_BPE  # plain text never produces added tokens
    # digits are split in groups of <= 3 by the GLM-4 pre-tokenizer
    pieces = tok.convert_ids_to_tokens(tok("12345")["input_ids"])
    assert "".join(pieces) == "12345" and all(len(p) <= 3 for p in pieces)
    # special tokens are atomic
    assert tok("[gMASK]<sop><|user|>\n")["input_ids"][:3] == tok.convert_tokens_to_ids(
        ["[gMASK]", "<sop>", "<|user|>"]
    )


def test_chat_template(tiny_ckpt):
    tok = AutoTokenizer.from_pretrained(tiny_ckpt)
    assert (
        tok.apply_chat_template(IMAGE_MESSAGES, tokenize=False, add_generation_prompt=True)
        == EXPECTED_IMAGE_PROMPT
    )
    convo = [
        {"role": "user", "content": "Open settings"},
        {"role": "assistant", "content": "done"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}],
        },
    ]
    assert tok.apply_chat_template(convo, tokenize=False, add_generation_prompt=False) == (
        "[gMASK]<sop><|user|>\nOpen settings<|assistant|>\ndone"
        "<|user|>\na<|begin_of_image|><|image|><|end_of_image|>b"
    )


def test_processor_and_mrope_positions(tiny_ckpt, tiny_model_f32):
    proc = _image_only_processor(tiny_ckpt)
    assert proc.image_processor.merge_size == 2
    text = proc.apply_chat_template(IMAGE_MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text == EXPECTED_IMAGE_PROMPT
    inputs = proc(text=[text], images=[_test_image(112, 56)], return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 8]]  # 56x112 px -> 4x8 patches -> 2x4 merged
    assert tuple(inputs["pixel_values"].shape) == (32, 3 * 2 * 14 * 14)
    ids = inputs["input_ids"][0].tolist()
    img_id = N_BPE + GLM_SPECIAL_TOKENS.index("<|image|>")
    assert ids.count(img_id) == 8
    first = ids.index(img_id)
    assert inputs["mm_token_type_ids"][0].tolist() == [1 if t == img_id else 0 for t in ids]

    # spec D.4: image token k of a gh x gw grid gets (T, H, W) = (st, st + k // gw, st + k % gw)
    pos, delta = tiny_model_f32.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"]
    )
    pos = pos[:, 0].tolist()
    st = first
    for k in range(8):
        assert [pos[0][first + k], pos[1][first + k], pos[2][first + k]] == [st, st + k // 4, st + k % 4]
    assert [p[first + 8] for p in pos] == [st + 4] * 3  # <|end_of_image|>: st + max(gh, gw)
    assert int(delta) == (st + 4) - (first + 8)  # = -4
    for i in range(first):
        assert pos[0][i] == pos[1][i] == pos[2][i] == i


def test_image_processor_is_pil_without_torchvision(tiny_ckpt):
    ip = AutoImageProcessor.from_pretrained(tiny_ckpt)
    assert ip.patch_size == 14 and ip.merge_size == 2 and ip.temporal_patch_size == 2
    if importlib.util.find_spec("torchvision") is None:
        assert type(ip).__name__ == "Glm4vImageProcessorPil"


# ----------------------------------------------------------------------------------------
# greedy decoding margins
# ----------------------------------------------------------------------------------------

MIN_MARGIN = 1e-2


def test_greedy_text_margins(tiny_ckpt, tiny_model_f32):
    tok = AutoTokenizer.from_pretrained(tiny_ckpt)
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": "Open the settings app."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    new, margins = _greedy(tiny_model_f32, inputs)
    assert len(new) == 16
    assert max(new) < len(tok)  # never an unused (padding) id
    assert len(set(new)) >= 8  # not degenerate
    assert min(margins) > MIN_MARGIN, margins


def test_greedy_image_margins(tiny_ckpt, tiny_model_f32):
    proc = _image_only_processor(tiny_ckpt)
    text = proc.apply_chat_template(IMAGE_MESSAGES, tokenize=False, add_generation_prompt=True)
    inputs = proc(text=[text], images=[_test_image(112, 56)], return_tensors="pt")
    new, margins = _greedy(tiny_model_f32, inputs)
    assert len(new) == 16 and max(new) < len(proc.tokenizer) and len(set(new)) >= 8
    assert min(margins) > MIN_MARGIN, margins
    # the image matters: a different image changes the continuation's logits
    other = proc(
        text=[text],
        images=[_test_image(112, 56).transpose(PIL_Image.Transpose.FLIP_LEFT_RIGHT)],
        return_tensors="pt",
    )
    with torch.no_grad():
        la = tiny_model_f32(**inputs).logits[0, -1]
        lb = tiny_model_f32(**other).logits[0, -1]
    assert (la - lb).abs().max() > 1e-2


def test_no_torch_import_needed(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        import autoglm_gguf._tiny.checkpoint as tc
        out = tc.write_checkpoint({str(tmp_path / "ck")!r})
        bad = [m for m in ("torch", "transformers") if m in sys.modules]
        assert not bad, bad
        import json
        print(json.dumps(sorted(p.name for p in out.iterdir())))
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    names = json.loads(res.stdout)
    for required in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "preprocessor_config.json",
    ):
        assert required in names
