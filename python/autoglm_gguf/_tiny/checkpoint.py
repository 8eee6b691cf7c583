"""Tiny (or not so tiny) random-weight Hugging Face checkpoints of ``Glm4vForConditionalGeneration``.

The checkpoint has the exact tensor names and shapes that transformers 5.23's
``Glm4vForConditionalGeneration`` saves and loads (``model.visual.*``,
``model.language_model.*``, ``lm_head.weight``), plus a small byte-level BPE
tokenizer with GLM-4's special tokens, a GLM-4.1V-style chat template and the
generation / preprocessor configs, so that ``transformers`` and our converter
can both read it.

Only numpy, ``tokenizers`` and the standard library are used (no torch, no
transformers), so the package's ``autoglm-gguf convert`` demo works without torch.

Weights are streamed: every tensor is generated in bounded row chunks and written
straight to its safetensors file, so writing a 9B-shaped checkpoint needs a few
tens of MB of memory.

Random values
-------------
Each tensor gets its own ``numpy.random.Generator`` seeded with
``(seed, blake2b(tensor name))``, so a tensor's values depend only on the seed,
its name and its shape (not on the other tensors, the dtype's chunking or the
shard layout). Values are drawn as uniform 16-bit indices into a table of the
65536 normal quantiles ``Phi^-1((i + 0.5) / 65536)`` (scaled/shifted per kind),
which is ~4x faster than ``standard_normal`` plus conversion and is a perfectly
good "normal" for random weights (|z| <= 4.33):

* matrices / conv kernels / embeddings: ``N(0, weight_std)``, except ``lm_head``:
  ``N(0, 4 * weight_std)`` (this only scales the logits, giving greedy decoding of the
  tiny model top-1/top-2 gaps of a few 1e-2 instead of a few 1e-3). With the tokenizer,
  the lm_head rows of the unused padding ids (>= 500) are zero, so greedy decoding never
  emits an id the tokenizer cannot decode.
* RMSNorm and LayerNorm weights: ``1 + N(0, 0.1)`` (a missing or wrong norm is visible)
* biases (q/k/v, conv biases, LayerNorm bias): ``N(0, 0.5 * weight_std)`` (non-zero,
  so a dropped bias is visible)

All tensors of a checkpoint have the same dtype (like ``save_pretrained``).

Special tokens
--------------
GLM-4.1V has 20 contiguous added tokens 151329..151348. The first 14 (``<|endoftext|>``
.. ``<|end_of_video|>``) and the ids of ``<|image|>`` = 151343 and ``<|video|>`` = 151344
are confirmed (design spec D.1, transformers' Glm4vConfig defaults). The remaining
four are NOT confirmed; we use ``<think>``, ``</think>``, ``<answer>``, ``</answer>``
(GLM-4.1V-Thinking's output markup, added as non-special tokens as GLM-4.5 does for
``<think>``) so that the last one, at offset +19, plays the role of 151348, the
4th generation eos id of GLM-4.1V ([151329, 151336, 151338, 151348]).
Our tokenizer puts the 20 added tokens right after the BPE vocab (ids
``N_BPE .. N_BPE + 19`` = 480..499 by default); ``vocab_size`` (512) leaves 12
unused ids, like the real model's padded embedding table.

RoPE parameters
---------------
transformers 5.23 reads ``text_config.rope_parameters`` =
``{"rope_type", "rope_theta", "partial_rotary_factor", "mrope_section"}`` but, when a
legacy ``rope_scaling`` dict is present, it *replaces* ``rope_parameters`` with it and
fills ``rope_theta`` / ``partial_rotary_factor`` from the flat keys of the same name.
Older transformers (4.5x) and the released GLM-4.1V config.json use the flat keys
plus ``rope_scaling = {"type": "default", "mrope_section": [...]}``. We write all
three layouts from one source of truth, so every reader sees the same values.
"""

from __future__ import annotations

import copy
import json
import math
import os
import struct
import sys
import time
from pathlib import Path

from .tokenizer import (
    GLM_SPECIAL_TOKENS,
    N_BPE,
    TINY_VOCAB,
    special_token_id,
    write_json,
    write_tokenizer_files,
)
from .weights import iter_tensor_chunks

__all__ = ["TINY_TEXT", "TINY_VISION", "make_config", "tensor_specs", "write_checkpoint"]

# --------------------------------------------------------------------------------------
# Default tiny config
# --------------------------------------------------------------------------------------

#: text_config of the default tiny model. head_dim = 64 / 4 = 16 (transformers' text attention
#: hard-codes head_dim = hidden_size // num_attention_heads; there is no head_dim field), rotary
#: dim = 16 * 0.5 = 8, i.e. 4 frequencies, split T/H/W = [1, 2, 1] (all three sections non-empty
#: and H != W so that swapping streams is detectable).
TINY_TEXT: dict = {
    "vocab_size": TINY_VOCAB,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "attention_bias": True,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "use_cache": True,
    "pad_token_id": special_token_id("<|endoftext|>"),
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "partial_rotary_factor": 0.5,
        "mrope_section": [1, 2, 1],
    },
}

#: vision_config of the default tiny model: head_dim 16, 8x8 = 64-entry position table,
#: ViT MLP width = out_hidden_size (64), merger width = intermediate_size (80).
TINY_VISION: dict = {
    "depth": 2,
    "hidden_size": 32,
    "num_heads": 2,
    "hidden_act": "silu",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "in_channels": 3,
    "image_size": 112,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": 64,
    "intermediate_size": 80,
    "rms_norm_eps": 1e-5,
    "initializer_range": 0.02,
    "rope_parameters": {"rope_type": "axial", "rope_theta": 10000.0},
}

_TOP_DEFAULTS: dict = {
    "image_token_id": special_token_id("<|image|>"),
    "video_token_id": special_token_id("<|video|>"),
    "image_start_token_id": special_token_id("<|begin_of_image|>"),
    "image_end_token_id": special_token_id("<|end_of_image|>"),
    "video_start_token_id": special_token_id("<|begin_of_video|>"),
    "video_end_token_id": special_token_id("<|end_of_video|>"),
    "tie_word_embeddings": False,
}

_ROPE_FLAT_KEYS = ("rope_theta", "partial_rotary_factor")


def _merge_rope(base: dict, text_over: dict) -> dict:
    """Fold every way of spelling the text RoPE parameters into one ``rope_parameters`` dict."""
    rp = dict(base.get("rope_parameters") or {})
    sources = []
    for key in ("rope_scaling", "rope_parameters"):  # legacy first, so rope_parameters wins ties
        val = text_over.get(key)
        if val:
            sources.append((key, dict(val)))
    for key, val in sources:
        val = dict(val)
        if "type" in val and "rope_type" not in val:
            val["rope_type"] = val["type"]
        val.pop("type", None)
        rp.update(val)
    for key in _ROPE_FLAT_KEYS + ("mrope_section",):
        if key in text_over:
            explicit = [v.get(key) for _, v in sources if key in v]
            if explicit and any(e != text_over[key] for e in explicit):
                raise ValueError(
                    f"conflicting text {key}: {text_over[key]!r} vs rope_parameters {explicit!r}"
                )
            rp[key] = text_over[key]
    rp.setdefault("rope_type", "default")
    rp.setdefault("rope_theta", 10000.0)
    explicit_mrope = "mrope_section" in text_over or any("mrope_section" in v for _, v in sources)
    if not explicit_mrope:
        # Derive from the rotary dim (so width/head overrides need no mrope override):
        # n freqs -> [n//4, ceil((n - n//4)/2), rest]; gives [1, 2, 1] for n=4, [8, 12, 12] for n=32.
        hid = text_over.get("hidden_size", base["hidden_size"])
        nh = text_over.get("num_attention_heads", base["num_attention_heads"])
        n = int((hid // nh) * rp.get("partial_rotary_factor", 1.0)) // 2
        t = max(1, n // 4) if n >= 3 else 0
        h = (n - t + 1) // 2
        rp["mrope_section"] = [t, h, n - t - h]
    rp["mrope_section"] = [int(s) for s in rp["mrope_section"]]
    return rp


def make_config(text: dict | None = None, vision: dict | None = None, **top) -> dict:
    """Full HF ``config.json`` dict for a Glm4vForConditionalGeneration, tiny defaults + overrides.

    ``text`` / ``vision`` override keys of ``TINY_TEXT`` / ``TINY_VISION`` (HF field names).
    For the text RoPE you may pass ``rope_parameters`` (merged key by key), a legacy
    ``rope_scaling`` dict, flat ``rope_theta`` / ``partial_rotary_factor``, or a flat
    ``mrope_section``; they are folded into one set of values that is then written in
    both the transformers-5 and the legacy layout. ``top`` overrides top-level keys
    (e.g. ``image_token_id``).
    """
    text_over = dict(text or {})
    vision_over = dict(vision or {})

    tc = copy.deepcopy(TINY_TEXT)
    rp = _merge_rope(tc, text_over)
    for key, val in text_over.items():
        if key in ("rope_parameters", "rope_scaling", "mrope_section") or key in _ROPE_FLAT_KEYS:
            continue
        tc[key] = copy.deepcopy(val)
    if tc.get("num_key_value_heads") is None:
        tc["num_key_value_heads"] = tc["num_attention_heads"]
    # One source of truth, three layouts (see module docstring).
    tc["rope_parameters"] = rp
    tc["rope_theta"] = rp["rope_theta"]
    if "partial_rotary_factor" in rp:
        tc["partial_rotary_factor"] = rp["partial_rotary_factor"]
    legacy = {"type": rp["rope_type"]}
    if "mrope_section" in rp:
        legacy["mrope_section"] = list(rp["mrope_section"])
    tc["rope_scaling"] = legacy
    tc.setdefault("tie_word_embeddings", False)
    tc["model_type"] = "glm4v_text"

    vc = copy.deepcopy(TINY_VISION)
    for key, val in vision_over.items():
        if key == "rope_parameters" and val:
            vc["rope_parameters"] = {**vc.get("rope_parameters", {}), **val}
        else:
            vc[key] = copy.deepcopy(val)
    if "out_hidden_size" not in vision_over:
        vc["out_hidden_size"] = tc["hidden_size"]
    vc["model_type"] = "glm4v_vision"

    cfg = {
        "architectures": ["Glm4vForConditionalGeneration"],
        "model_type": "glm4v",
        **copy.deepcopy(_TOP_DEFAULTS),
        "text_config": tc,
        "vision_config": vc,
    }
    for key, val in top.items():
        cfg[key] = copy.deepcopy(val)
    if "tie_word_embeddings" not in top:
        cfg["tie_word_embeddings"] = bool(tc.get("tie_word_embeddings", False))
    _validate(cfg)
    return cfg


def _text_rope(tc: dict) -> dict:
    """The text RoPE parameters of any config layout (ours, transformers 5, or a legacy config.json
    such as the released GLM-4.1V one), resolved the way transformers 5.23 resolves them."""
    rp = dict(tc.get("rope_scaling") or tc.get("rope_parameters") or {})
    rp.setdefault("rope_type", rp.pop("type", "default"))
    rp.setdefault("rope_theta", tc.get("rope_theta", 10000.0))
    if tc.get("partial_rotary_factor") is not None:
        rp.setdefault("partial_rotary_factor", tc["partial_rotary_factor"])
    return rp


def _validate(cfg: dict) -> None:
    tc, vc = cfg["text_config"], cfg["vision_config"]
    hid, nh, nkv = tc["hidden_size"], tc["num_attention_heads"], tc["num_key_value_heads"]
    if hid % nh:
        raise ValueError(f"text hidden_size {hid} not divisible by num_attention_heads {nh}")
    if nh % nkv:
        raise ValueError(f"num_attention_heads {nh} not divisible by num_key_value_heads {nkv}")
    head_dim = hid // nh
    if tc.get("head_dim") not in (None, head_dim):
        raise ValueError(
            f"Glm4v text attention uses head_dim = hidden/heads = {head_dim}, got {tc['head_dim']}"
        )
    if not tc.get("attention_bias", True):
        raise ValueError("Glm4v text attention always has q/k/v biases (attention_bias must be true)")
    rp = _text_rope(tc)
    rot = int(head_dim * rp.get("partial_rotary_factor", 1.0))
    if rot % 2 or rot <= 0:
        raise ValueError(f"rotary dim {rot} must be even and positive")
    sec = rp.get("mrope_section")
    if sec is not None and (len(sec) != 3 or sum(sec) != rot // 2 or min(sec) < 0):
        raise ValueError(f"mrope_section {sec} must have 3 entries summing to rotary_dim/2 = {rot // 2}")
    vh, vn = vc["hidden_size"], vc["num_heads"]
    if vh % vn or (vh // vn) % 4:
        raise ValueError(f"vision head_dim {vh}/{vn} must be an integer multiple of 4 (2-D axial RoPE)")
    if vc["image_size"] % vc["patch_size"]:
        raise ValueError("vision image_size must be a multiple of patch_size")
    if vc["out_hidden_size"] != hid:
        raise ValueError(f"vision out_hidden_size {vc['out_hidden_size']} != text hidden_size {hid}")
    if cfg.get("tie_word_embeddings"):
        raise ValueError("tie_word_embeddings=True is not supported (GLM-4.1V has a separate lm_head)")


# --------------------------------------------------------------------------------------
# Tensor list
# --------------------------------------------------------------------------------------


# kind: "w" matrix/conv/embedding, "norm" norm weight, "bias" bias
def tensor_specs(config: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """All persistent tensors of ``Glm4vForConditionalGeneration`` as ``(name, shape, kind)``,
    in module order (vision tower, language model, lm_head)."""
    tc, vc = config["text_config"], config["vision_config"]
    specs: list[tuple[str, tuple[int, ...], str]] = []

    def add(name: str, shape, kind: str) -> None:
        specs.append((name, tuple(int(s) for s in shape), kind))

    # ---- vision tower
    vh, out_h = vc["hidden_size"], vc["out_hidden_size"]
    p, tp, cin, m = (
        vc["patch_size"],
        vc["temporal_patch_size"],
        vc.get("in_channels", 3),
        vc["spatial_merge_size"],
    )
    v = "model.visual."
    add(v + "embeddings.position_embedding.weight", ((vc["image_size"] // p) ** 2, vh), "w")
    add(v + "patch_embed.proj.weight", (vh, cin, tp, p, p), "w")
    add(v + "patch_embed.proj.bias", (vh,), "bias")
    for i in range(vc["depth"]):
        b = f"{v}blocks.{i}."
        add(b + "norm1.weight", (vh,), "norm")
        add(b + "norm2.weight", (vh,), "norm")
        add(b + "attn.qkv.weight", (3 * vh, vh), "w")
        if vc.get("attention_bias", False):
            add(b + "attn.qkv.bias", (3 * vh,), "bias")
        add(b + "attn.proj.weight", (vh, vh), "w")
        add(b + "mlp.gate_proj.weight", (out_h, vh), "w")  # ViT MLP width is out_hidden_size
        add(b + "mlp.up_proj.weight", (out_h, vh), "w")
        add(b + "mlp.down_proj.weight", (vh, out_h), "w")
    mw = vc["intermediate_size"]
    add(v + "merger.proj.weight", (out_h, out_h), "w")
    add(v + "merger.post_projection_norm.weight", (out_h,), "norm")  # LayerNorm
    add(v + "merger.post_projection_norm.bias", (out_h,), "bias")
    add(v + "merger.gate_proj.weight", (mw, out_h), "w")
    add(v + "merger.up_proj.weight", (mw, out_h), "w")
    add(v + "merger.down_proj.weight", (out_h, mw), "w")
    add(v + "post_conv_layernorm.weight", (vh,), "norm")
    add(v + "downsample.weight", (out_h, vh, m, m), "w")
    add(v + "downsample.bias", (out_h,), "bias")
    add(v + "post_layernorm.weight", (vh,), "norm")

    # ---- language model
    hid, ff, nh, nkv = (
        tc["hidden_size"],
        tc["intermediate_size"],
        tc["num_attention_heads"],
        tc["num_key_value_heads"],
    )
    hd = hid // nh
    t = "model.language_model."
    add(t + "embed_tokens.weight", (tc["vocab_size"], hid), "w")
    for i in range(tc["num_hidden_layers"]):
        b = f"{t}layers.{i}."
        add(b + "self_attn.q_proj.weight", (nh * hd, hid), "w")
        add(b + "self_attn.q_proj.bias", (nh * hd,), "bias")
        add(b + "self_attn.k_proj.weight", (nkv * hd, hid), "w")
        add(b + "self_attn.k_proj.bias", (nkv * hd,), "bias")
        add(b + "self_attn.v_proj.weight", (nkv * hd, hid), "w")
        add(b + "self_attn.v_proj.bias", (nkv * hd,), "bias")
        add(b + "self_attn.o_proj.weight", (hid, nh * hd), "w")
        add(b + "mlp.gate_up_proj.weight", (2 * ff, hid), "w")
        add(b + "mlp.down_proj.weight", (hid, ff), "w")
        add(b + "input_layernorm.weight", (hid,), "norm")
        add(b + "post_attention_layernorm.weight", (hid,), "norm")
        add(b + "post_self_attn_layernorm.weight", (hid,), "norm")
        add(b + "post_mlp_layernorm.weight", (hid,), "norm")
    add(t + "norm.weight", (hid,), "norm")
    add("lm_head.weight", (tc["vocab_size"], hid), "w")
    return specs


# --------------------------------------------------------------------------------------
# Numerics
# --------------------------------------------------------------------------------------

_DTYPES = {
    # ours -> (safetensors dtype, bytes per element, config "dtype")
    "bf16": ("BF16", 2, "bfloat16"),
    "f16": ("F16", 2, "float16"),
    "f32": ("F32", 4, "float32"),
}
# --------------------------------------------------------------------------------------
# safetensors writer
# --------------------------------------------------------------------------------------


def _safetensors_header(entries: list[tuple[str, tuple[int, ...], str]], st_dtype: str, esize: int) -> bytes:
    header: dict = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, shape, _ in entries:
        nbytes = math.prod(shape) * esize
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    return struct.pack("<Q", len(raw)) + raw


def _plan_shards(specs, esize: int, max_shard_bytes: int | None):
    if not max_shard_bytes:
        return [list(specs)]
    shards: list[list] = [[]]
    cur = 0
    for spec in specs:
        nbytes = math.prod(spec[1]) * esize
        if shards[-1] and cur + nbytes > max_shard_bytes:
            shards.append([])
            cur = 0
        shards[-1].append(spec)
        cur += nbytes
    return shards



def _check_tokenizer_compat(config: dict) -> None:
    n_tok = N_BPE + len(GLM_SPECIAL_TOKENS)
    vocab = config["text_config"]["vocab_size"]
    if vocab < n_tok:
        raise ValueError(f"text vocab_size {vocab} < tokenizer size {n_tok}; pass tokenizer=False")
    expect = {k: v for k, v in _TOP_DEFAULTS.items() if k.endswith("_token_id")}
    bad = {k: config.get(k) for k, v in expect.items() if config.get(k) != v}
    if bad:
        raise ValueError(
            f"config token ids {bad} do not match the tiny tokenizer ({expect}); pass tokenizer=False"
        )


# --------------------------------------------------------------------------------------
# Checkpoint writer
# --------------------------------------------------------------------------------------


def write_checkpoint(
    out_dir,
    config: dict | None = None,
    *,
    dtype: str = "bf16",
    seed: int = 0,
    max_shard_bytes: int | None = None,
    weight_std: float = 0.2,
    tokenizer: bool = True,
    progress: bool = False,
) -> Path:
    """Write a random-weight HF checkpoint (safetensors + configs [+ tokenizer]) to ``out_dir``.

    ``config`` defaults to ``make_config()``; it is validated and written as ``config.json``
    (with ``dtype`` set). Weights are streamed tensor by tensor, so memory stays bounded
    for any model size. ``max_shard_bytes`` splits the weights into
    ``model-0000i-of-0000N.safetensors`` + ``model.safetensors.index.json`` (HF layout) when
    they exceed it. ``weight_std`` is the std of every matrix (0.2 gives a tiny model clear
    greedy margins; use ~0.02 for large shapes if the numerics matter). With
    ``tokenizer=False`` only config.json, generation_config.json and the weights are written.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    st_dtype, esize, cfg_dtype = _DTYPES[dtype]
    config = copy.deepcopy(config) if config is not None else make_config()
    _validate(config)
    if tokenizer:
        _check_tokenizer_compat(config)
    config["dtype"] = cfg_dtype  # transformers >= 5
    config["torch_dtype"] = cfg_dtype  # transformers 4.x

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale_files = list(out.glob("model*.safetensors")) + list(out.glob("model*.safetensors.partial"))
    for stale in stale_files + [out / "model.safetensors.index.json"]:
        if stale.exists():
            stale.unlink()

    # With our tokenizer, lm_head rows of the unused (padding) ids are zero, so greedy decoding
    # never picks an id the tokenizer cannot decode (their logit is 0, far below the max).
    n_tok = N_BPE + len(GLM_SPECIAL_TOKENS) if tokenizer else None
    specs = tensor_specs(config)
    shards = _plan_shards(specs, esize, max_shard_bytes)
    nshard = len(shards)
    total_bytes = sum(math.prod(s) * esize for _, s, _ in specs)
    weight_map: dict[str, str] = {}
    t0 = last_report = time.perf_counter()
    written = 0
    for si, entries in enumerate(shards):
        fname = "model.safetensors" if nshard == 1 else f"model-{si + 1:05d}-of-{nshard:05d}.safetensors"
        tmp = out / (fname + ".partial")
        with open(tmp, "wb") as f:
            f.write(_safetensors_header(entries, st_dtype, esize))
            for name, shape, kind in entries:
                zero_from = n_tok if name == "lm_head.weight" else None
                for chunk in iter_tensor_chunks(
                    name, shape, kind, seed=seed, dtype=dtype, weight_std=weight_std, zero_rows_from=zero_from
                ):
                    f.write(memoryview(chunk).cast("B"))
                    written += chunk.nbytes
                weight_map[name] = fname
                now = time.perf_counter()
                if progress and (now - last_report >= 0.5 or written == total_bytes):
                    last_report = now
                    sys.stderr.write(
                        f"\r[tiny_checkpoint] {written / 2**20:9.1f}/{total_bytes / 2**20:.1f} MiB "
                        f"({written / 2**20 / max(now - t0, 1e-9):7.1f} MiB/s) {fname}"
                    )
                    sys.stderr.flush()
        os.replace(tmp, out / fname)
    if progress:
        sys.stderr.write("\n")
    if nshard > 1:
        write_json(
            out / "model.safetensors.index.json",
            {
                "metadata": {
                    "total_parameters": sum(math.prod(s) for _, s, _ in specs),
                    "total_size": total_bytes,
                },
                "weight_map": dict(sorted(weight_map.items())),
            },
        )

    write_json(out / "config.json", config)
    if tokenizer:
        write_tokenizer_files(out, config)
    else:
        tc = config["text_config"]
        pad = tc.get("pad_token_id")
        gen = {"do_sample": False}
        if pad is not None:
            gen["pad_token_id"] = pad
        write_json(out / "generation_config.json", gen)
    return out
