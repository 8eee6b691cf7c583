"""Which ggml type each tensor of a text model gets under a quantization preset ("q4_k_m", "iq4_xs", ...).

The presets are llama.cpp's (llama-quantize's menu), and so are the per-tensor choices: for the same
input and importance matrix, `autoglm-gguf quantize` writes the file llama-quantize writes, byte for
byte (tests/test_quantize_llamacpp.py checks it preset by preset). The rules below are the ones that
apply to a dense model (no experts); where llama.cpp has arch-specific exceptions (Falcon, 70B
shapes, MoE) they cannot fire for glm4 and are left out.
ref: llama.cpp src/llama-quant.cpp (tensor_allows_quantization, llama_tensor_get_type_impl,
tensor_type_fallback, tensor_requires_imatrix, llama_ftype_get_default_type)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import gguf

T = gguf.GGMLQuantizationType


@dataclass(frozen=True)
class Preset:
    name: str
    ftype: int          # general.file_type (llama_ftype)
    default: T          # the type most tensors get
    about: str


# (name, llama_ftype, default type, description). Sizes are bits per weight of the bulk tensors.
PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("f32", 0, T.F32, "32-bit float, no quantization"),
    Preset("f16", 1, T.F16, "16-bit float"),
    Preset("bf16", 32, T.BF16, "bfloat16"),
    Preset("q8_0", 7, T.Q8_0, "8.5 bpw, near lossless"),
    Preset("q6_k", 18, T.Q6_K, "6.56 bpw"),
    Preset("q5_k_m", 17, T.Q5_K, "5.5 bpw mix, attn_v/ffn_down partly Q6_K"),
    Preset("q5_k_s", 16, T.Q5_K, "5.5 bpw"),
    Preset("q5_1", 9, T.Q5_1, "6 bpw (legacy)"),
    Preset("q5_0", 8, T.Q5_0, "5.5 bpw (legacy)"),
    Preset("q4_k_m", 15, T.Q4_K, "4.5 bpw mix, attn_v/ffn_down partly Q6_K: the usual default"),
    Preset("q4_k_s", 14, T.Q4_K, "4.5 bpw, first layers Q5_K"),
    Preset("q4_1", 3, T.Q4_1, "5 bpw (legacy)"),
    Preset("q4_0", 2, T.Q4_0, "4.5 bpw (legacy), output Q6_K"),
    Preset("iq4_xs", 30, T.IQ4_XS, "4.25 bpw non-linear"),
    Preset("iq4_nl", 25, T.IQ4_NL, "4.5 bpw non-linear, 32-blocks"),
    Preset("q3_k_l", 13, T.Q3_K, "3.4 bpw mix, attn_v/ffn_down/attn_output Q5_K"),
    Preset("q3_k_m", 12, T.Q3_K, "3.4 bpw mix, attn_v/ffn_down/attn_output Q4_K/Q5_K"),
    Preset("q3_k_s", 11, T.Q3_K, "3.4 bpw"),
    Preset("iq3_m", 27, T.IQ3_S, "3.66 bpw mix"),
    Preset("iq3_s", 26, T.IQ3_S, "3.44 bpw"),
    Preset("iq3_xs", 22, T.IQ3_S, "3.3 bpw mix (needs an importance matrix)"),
    Preset("iq3_xxs", 23, T.IQ3_XXS, "3.06 bpw (needs an importance matrix)"),
    Preset("q2_k", 10, T.Q2_K, "2.6 bpw mix, attn_v/ffn_down/attn_output Q3_K/Q4_K"),
    Preset("q2_k_s", 21, T.Q2_K, "2.6 bpw (needs an importance matrix)"),
    Preset("iq2_m", 29, T.IQ2_S, "2.7 bpw (needs an importance matrix)"),
    Preset("iq2_s", 28, T.IQ2_XS, "2.5 bpw (needs an importance matrix)"),
    Preset("iq2_xs", 20, T.IQ2_XS, "2.31 bpw (needs an importance matrix)"),
    Preset("iq2_xxs", 19, T.IQ2_XXS, "2.06 bpw (needs an importance matrix)"),
    Preset("iq1_m", 31, T.IQ1_M, "1.75 bpw (needs an importance matrix)"),
    Preset("iq1_s", 24, T.IQ1_S, "1.56 bpw (needs an importance matrix)"),
]}

# The types the vision projector's matrices may be stored in (`convert --mmproj-outtype`): ggml's CPU,
# CUDA and Vulkan matmuls all take these as the weight of a float activation.
MMPROJ_OUTTYPES = ("f16", "f32", "bf16", "q8_0", "q6_k", "q5_k", "q4_k", "q4_0")
ALIASES = {"q4_k": "q4_k_m", "q5_k": "q5_k_m", "q3_k": "q3_k_m"}  # as llama-quantize's menu

_IQ_LOW = {"iq2_xxs", "iq2_xs", "iq1_s", "iq2_s", "iq2_m", "iq1_m"}   # llama.cpp's "very low bit" group


def preset(name: str) -> Preset:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in PRESETS:
        raise ValueError(f"unknown quantization type {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[key]


@dataclass
class TensorInfo:
    name: str
    ne: tuple[int, ...]      # ggml order: ne[0] is the row length
    type: T


@dataclass
class ModelShape:
    n_layer: int
    n_head: int
    n_head_kv: int

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0


@dataclass
class MixOptions:
    has_imatrix: bool = False
    output_type: T | None = None            # --output-tensor-type
    token_embedding_type: T | None = None   # --token-embedding-type
    pure: bool = False                      # every quantizable tensor in the default type
    fallbacks: list[str] = field(default_factory=list)   # filled: "name: Q4_K -> Q5_0 (ncols 96)"


def _layer(name: str) -> int:
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


def file_order(tensors: list[TensorInfo]) -> list[TensorInfo]:
    """llama-quantize's output order: by layer (non-layer tensors first), then by name."""
    return sorted(tensors, key=lambda t: (_layer(t.name), t.name))


def category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


_NOT_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj", "ssm_conv1d",
                  "attn_rel_b.weight", ".position_embd", ".patch_embd", ".patch_merger")


def allows_quantization(t: TensorInfo) -> bool:
    """2-D+ weights except norms and a few small or position tables (llama.cpp's list, the parts that can match)."""
    n_dims = max((i + 1 for i, n in enumerate(t.ne) if n != 1), default=1)
    if n_dims < 2 or not t.name.endswith("weight"):
        return False
    return not any(s in t.name for s in _NOT_QUANTIZED) and t.name not in ("position_embd.weight", "token_types.weight")


def _blck(qtype: T) -> int:
    return gguf.GGML_QUANT_SIZES[qtype][0]


FALLBACK = {T.IQ1_S: T.IQ4_NL, T.IQ1_M: T.IQ4_NL, T.IQ2_XXS: T.IQ4_NL, T.IQ2_XS: T.IQ4_NL, T.IQ2_S: T.IQ4_NL,
             T.IQ3_XXS: T.IQ4_NL, T.IQ3_S: T.IQ4_NL, T.IQ4_XS: T.IQ4_NL,
             T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.TQ1_0: T.Q4_0, T.TQ2_0: T.Q4_0,
             T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}


def fit_type(qtype: T, ncols: int) -> T:
    """qtype when rows of ncols fit its blocks, else llama.cpp's one fallback step (Q4_K -> Q5_0,
    Q6_K -> Q8_0, IQ* -> IQ4_NL, ...) when that fits, else F16 (block size 1)."""
    if ncols % _blck(qtype) == 0:
        return qtype
    if qtype in FALLBACK:
        out = FALLBACK[qtype]
    elif _blck(qtype) <= 32:
        out = qtype                       # already a 32-block type: only F16 is left
    else:
        raise ValueError(f"no fallback type for {qtype.name} ({ncols} columns)")
    return out if ncols % _blck(out) == 0 else T.F16


def fit_tensor(t: TensorInfo, target: T, opts: MixOptions) -> T:
    """fit_type for a tensor, recording the fallback in opts.fallbacks."""
    out = fit_type(target, t.ne[0])
    if out != target:
        opts.fallbacks.append(f"{t.name}: {target.name} -> {out.name} ({t.ne[0]} columns)")
    return out


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


class _Counters:
    def __init__(self, tensors: list[TensorInfo], shape: ModelShape):
        cats = [category(t.name) for t in tensors]
        self.n_attention_wv = sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in cats)
        self.tied = "output" not in cats
        self.n_ffn = shape.n_layer
        self.i_attention_wv = self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0


def _mixed_type(t: TensorInfo, new: T, p: Preset, shape: ModelShape, c: _Counters, opts: MixOptions) -> T:
    """llama_tensor_get_type_impl for a dense model: more bits where quantization hurts most."""
    f, cat, gqa = p.name, category(t.name), shape.n_gqa
    if cat == "output" or (c.tied and cat == "token_embd"):
        if opts.output_type is not None:
            return opts.output_type
        if t.ne[0] % _blck(new) != 0:
            return T.Q8_0
        if f in ("iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s", "iq2_s", "iq2_m", "iq1_m"):
            return T.Q5_K
        return new if new == T.Q8_0 else T.Q6_K
    if cat == "token_embd":
        if opts.token_embedding_type is not None:
            return opts.token_embedding_type
        if f in ("iq2_xxs", "iq2_xs", "iq1_s", "iq1_m"):
            return T.Q2_K
        if f in ("iq2_s", "iq2_m", "iq3_xxs"):
            return T.IQ3_S
        return new
    attn_v = cat in ("attn_v", "attn_qkv", "attn_kv_b")
    if f in _IQ_LOW:
        if attn_v:
            new = T.Q4_K if gqa >= 4 else (T.IQ3_S if f in ("iq2_s", "iq2_m") else T.Q2_K)
            c.i_attention_wv += 1
        elif cat == "ffn_down":
            if c.i_ffn_down < c.n_ffn // 8:
                new = T.IQ3_S if f in ("iq2_s", "iq2_m") else T.Q2_K
            c.i_ffn_down += 1
        elif cat == "attn_output":
            if f in ("iq1_s", "iq1_m"):
                new = T.IQ2_XXS
            elif f in ("iq2_s", "iq2_m"):
                new = T.IQ3_S
        return new
    if attn_v:
        i, n = c.i_attention_wv, c.n_attention_wv
        if f == "q2_k":
            new = T.Q4_K if gqa >= 4 else T.Q3_K
        elif f == "q2_k_s" and gqa >= 4:
            new = T.Q4_K
        elif f == "iq3_xxs":
            new = T.Q4_K if gqa >= 4 else (T.IQ3_S if not opts.has_imatrix else T.IQ3_XXS)
        elif f in ("iq3_xs", "iq3_s") and gqa >= 4:
            new = T.Q4_K
        elif f == "iq3_m":
            new = T.Q4_K
        elif f == "q3_k_m":
            new = T.Q5_K if i < 2 else T.Q4_K
        elif f == "q3_k_l":
            new = T.Q5_K
        elif f in ("iq4_nl", "iq4_xs") and gqa >= 4:
            new = T.Q5_K
        elif f in ("q4_k_m", "q5_k_m") and _more_bits(i, n):
            new = T.Q6_K
        elif f == "q4_k_s" and i < 4:
            new = T.Q5_K
        c.i_attention_wv += 1
        return new
    if cat in ("attn_k", "attn_q"):
        if f == "iq3_xs":
            return T.IQ3_XXS
        if f == "iq3_xxs":
            return T.IQ2_S
        return new
    if cat == "ffn_down":
        i, n = c.i_ffn_down, c.n_ffn
        if f == "q2_k":
            new = T.Q3_K
        elif f == "q2_k_s":
            if i < n // 8:
                new = T.Q4_K
        elif f == "iq3_xxs" and not opts.has_imatrix:
            new = T.Q4_K if i < n // 8 else T.Q3_K
        elif f == "q3_k_m":
            new = T.Q5_K if i < n // 16 else T.Q4_K
        elif f == "iq3_m" and i < n // 8:
            new = T.Q4_K
        elif f == "q3_k_l":
            new = T.Q5_K
        elif f == "q4_k_m":
            if _more_bits(i, n):
                new = T.Q6_K
        elif i < n // 8 and f in ("iq4_nl", "iq4_xs") and not opts.has_imatrix:
            new = T.Q5_K
        elif f == "q5_k_m" and _more_bits(i, n):
            new = T.Q6_K
        elif f == "q4_k_s" and i < n // 8:
            new = T.Q5_K
        elif f in ("q4_0", "q5_0") and opts.has_imatrix and i < n // 8:
            new = T.Q4_1 if f == "q4_0" else T.Q5_1
        c.i_ffn_down += 1
        return new
    if cat == "attn_output":
        return {"q2_k": T.Q3_K, "iq3_xxs": T.IQ3_S, "q3_k_m": T.Q4_K, "q3_k_l": T.Q5_K, "iq3_m": T.Q4_K}.get(f, new)
    if cat == "attn_qkv":
        return {"q3_k_m": T.Q4_K, "q3_k_l": T.Q4_K, "iq3_m": T.Q4_K, "q4_k_m": T.Q5_K, "q5_k_m": T.Q6_K}.get(f, new)
    if cat in ("ffn_gate", "ffn_up"):
        i = c.i_ffn_gate if cat == "ffn_gate" else c.i_ffn_up
        n = c.n_ffn
        if f == "iq3_xs" and n // 8 <= i < 7 * n // 8:
            new = T.IQ3_XXS
        if cat == "ffn_gate":
            c.i_ffn_gate += 1
        else:
            c.i_ffn_up += 1
        return new
    return new


def requires_imatrix(name: str, qtype: T, p: Preset) -> bool:
    if name in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight"):
        return False
    if qtype in (T.IQ3_XXS, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_M, T.IQ1_S):
        return True
    return qtype == T.Q2_K and p.name == "q2_k_s"


def plan_types(tensors: list[TensorInfo], shape: ModelShape, p: Preset, opts: MixOptions | None = None
               ) -> list[tuple[TensorInfo, T]]:
    """Each tensor (in llama-quantize's file order) with its output type."""
    opts = opts or MixOptions()
    ordered = file_order(tensors)
    c = _Counters(ordered, shape)
    out = []
    for t in ordered:
        if not allows_quantization(t):
            out.append((t, t.type))
            continue
        cat = category(t.name)
        if opts.token_embedding_type is not None and cat == "token_embd":
            out.append((t, opts.token_embedding_type))
            continue
        if opts.output_type is not None and cat == "output":
            out.append((t, opts.output_type))
            continue
        new = p.default
        if new not in (T.F32, T.F16, T.BF16):
            if not opts.pure:
                new = _mixed_type(t, new, p, shape, c, opts)
            new = fit_tensor(t, new, opts)
        out.append((t, new))
    return out
