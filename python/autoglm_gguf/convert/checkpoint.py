"""A Hugging Face Glm4vForConditionalGeneration checkpoint directory, read and validated.

Everything the converter needs is gathered here before any output is created, so that bad input
(wrong architecture, missing or truncated shards, unexpected shapes) fails early with a clear
message and leaves nothing behind.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConversionError
from .safetensors_io import TensorRef, open_checkpoint_tensors

SUPPORTED_ARCHS = ("Glm4vForConditionalGeneration",)

# HF prefixes seen in Glm4v checkpoints (transformers >= 4.53 layout first, then older ones).
TEXT_PREFIXES = ("model.language_model.", "language_model.model.", "model.")
VISION_PREFIXES = ("model.visual.", "visual.")
LM_HEAD_NAMES = ("lm_head.weight", "language_model.lm_head.weight")


@dataclass(frozen=True)
class TextHParams:
    n_vocab: int                 # vocab_size
    n_embd: int                  # hidden_size
    n_layer: int                 # num_hidden_layers
    n_head: int                  # num_attention_heads
    n_head_kv: int               # num_key_value_heads
    head_dim: int                # hidden_size // num_attention_heads (what HF's attention uses)
    n_ff: int                    # intermediate_size
    n_rot: int                   # head_dim * partial_rotary_factor
    rope_theta: float
    rope_sections: tuple[int, ...]  # mrope_section, () for a text-only config
    rms_eps: float
    n_ctx_train: int             # max_position_embeddings
    tie_word_embeddings: bool


@dataclass(frozen=True)
class VisionHParams:
    n_embd: int                  # hidden_size
    n_layer: int                 # depth
    n_head: int                  # num_heads
    n_ff: int                    # MLP width of the ViT blocks = out_hidden_size
    n_proj: int                  # out_hidden_size (= text hidden size)
    n_merger_ff: int             # intermediate_size (the merger's SwiGLU width)
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    image_size: int
    in_channels: int
    n_pos: int                   # (image_size // patch_size) ** 2
    rms_eps: float
    attention_bias: bool
    hidden_act: str


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]
    text: TextHParams
    vision: VisionHParams
    text_tensors: dict[str, TensorRef]     # key: HF name without prefix, e.g. "layers.0.self_attn.q_proj.weight"
    lm_head: TensorRef | None
    vision_tensors: dict[str, TensorRef]   # key: HF name without "model.visual."
    tokenizer_json: Path
    tokenizer_config: dict[str, Any]
    chat_template: str | None
    generation_config: dict[str, Any] = field(default_factory=dict)
    preprocessor_config: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def source_dtypes(self) -> set[str]:
        return {t.dtype for t in [*self.text_tensors.values(), *self.vision_tensors.values()]}


def _read_json(path: Path, what: str, required: bool = True) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise ConversionError(f"{path.parent}: missing {path.name} ({what}); is this a complete "
                                  "Hugging Face Glm4vForConditionalGeneration checkpoint directory?")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path}: cannot parse {what} as JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    return data


def _need(cfg: dict[str, Any], key: str, where: str) -> Any:
    if key not in cfg:
        raise ConversionError(f"config.json: {where} has no '{key}'")
    return cfg[key]


# Bounds on sizes: far above any real model, low enough that a hostile config cannot make the
# converter compute or allocate absurd amounts before it looks at a tensor.
_MAX_DIM = 1 << 20
_MAX_LAYERS = 4096


def _int(cfg: dict[str, Any], key: str, where: str, lo: int = 1, hi: int = _MAX_DIM, default: Any = ...) -> int:
    """An integer setting within [lo, hi] (a float equal to an integer is accepted, as JSON writers do)."""
    v = _need(cfg, key, where) if default is ... else cfg.get(key, default)
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConversionError(f"config.json: {where}.{key} = {v!r} must be an integer in [{lo}, {hi}]")
    return v


def _float(cfg: dict[str, Any], key: str, where: str, lo: float, hi: float, default: Any = ...) -> float:
    """A finite number within (lo, hi]."""
    v = _need(cfg, key, where) if default is ... else cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo < v <= hi:
        raise ConversionError(f"config.json: {where}.{key} = {v!r} must be a finite number in ({lo:g}, {hi:g}]")
    return float(v)


def _rope_params(tc: dict[str, Any]) -> dict[str, Any]:
    """Merge the rope settings of old (rope_theta / rope_scaling / partial_rotary_factor at top level)
    and new (transformers 5: rope_parameters) config layouts; the newer layout wins."""
    out: dict[str, Any] = {}
    for k in ("rope_theta", "partial_rotary_factor"):
        if k in tc:
            out[k] = tc[k]
    for k in ("rope_scaling", "rope_parameters"):
        if isinstance(tc.get(k), dict):
            out.update(tc[k])
    return out


def parse_text_hparams(cfg: dict[str, Any]) -> TextHParams:
    tc = cfg.get("text_config")
    if not isinstance(tc, dict):
        raise ConversionError("config.json: no 'text_config' object; not a Glm4v checkpoint?")
    where = "text_config"
    n_embd = _int(tc, "hidden_size", where)
    n_head = _int(tc, "num_attention_heads", where, hi=4096)
    if n_embd % n_head:
        raise ConversionError(f"config.json: text hidden_size {n_embd} is not divisible by num_attention_heads {n_head}")
    head_dim = n_embd // n_head
    if tc.get("head_dim") not in (None, head_dim):
        raise ConversionError(f"config.json: text head_dim {tc['head_dim']} differs from hidden_size/num_attention_heads "
                              f"= {head_dim}; transformers' Glm4v attention uses the latter, so this config is inconsistent")
    n_head_kv = _int(tc, "num_key_value_heads", where, hi=n_head, default=n_head)
    if n_head % n_head_kv:
        raise ConversionError(f"config.json: num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_head_kv}")
    rope = _rope_params(tc)
    partial = _float(rope, "partial_rotary_factor", f"{where} rope", 0.0, 1.0, default=0.5)
    n_rot = int(head_dim * partial)
    if n_rot <= 0 or n_rot % 2 or n_rot > head_dim:
        raise ConversionError(f"config.json: rotary dims head_dim*partial_rotary_factor = {head_dim}*{partial} = {n_rot} "
                              "must be a positive even number <= head_dim")
    raw_sections = rope.get("mrope_section", ()) or ()
    if not isinstance(raw_sections, (list, tuple)) or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in raw_sections):
        raise ConversionError(f"config.json: mrope_section {raw_sections!r} must be a list of non-negative integers")
    sections = tuple(raw_sections)
    if sections and sum(sections) != n_rot // 2:
        raise ConversionError(f"config.json: mrope_section {list(sections)} sums to {sum(sections)}, expected "
                              f"rotary_dims/2 = {n_rot // 2}")
    if len(sections) > 4:
        raise ConversionError(f"config.json: mrope_section {list(sections)} has more than 4 entries")
    if "rope_theta" not in rope:
        raise ConversionError("config.json: text_config has no rope_theta (neither at top level nor in rope_parameters)")
    return TextHParams(
        n_vocab=_int(tc, "vocab_size", where, hi=1 << 24),
        n_embd=n_embd,
        n_layer=_int(tc, "num_hidden_layers", where, hi=_MAX_LAYERS),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_ff=_int(tc, "intermediate_size", where),
        n_rot=n_rot,
        rope_theta=_float(rope, "rope_theta", f"{where} rope", 0.0, 1e12),
        rope_sections=sections,
        rms_eps=_float(tc, "rms_norm_eps", where, 0.0, 1.0, default=1e-5),
        n_ctx_train=_int(tc, "max_position_embeddings", where, hi=1 << 26, default=65536),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", tc.get("tie_word_embeddings", False))),
    )


def parse_vision_hparams(cfg: dict[str, Any], text: TextHParams) -> VisionHParams:
    vc = cfg.get("vision_config")
    if not isinstance(vc, dict):
        raise ConversionError("config.json: no 'vision_config' object; not a Glm4v checkpoint?")
    where = "vision_config"
    n_embd = _int(vc, "hidden_size", where)
    n_head = _int(vc, "num_heads", where, hi=4096)
    if n_embd % n_head:
        raise ConversionError(f"config.json: vision hidden_size {n_embd} is not divisible by num_heads {n_head}")
    patch = _int(vc, "patch_size", where, hi=1024, default=14)
    image_size = _int(vc, "image_size", where, lo=patch, hi=1 << 16, default=336)
    n_proj = _int(vc, "out_hidden_size", where, default=text.n_embd)
    if n_proj != text.n_embd:
        raise ConversionError(f"config.json: vision out_hidden_size {n_proj} must equal the text hidden_size {text.n_embd}")
    tps = _int(vc, "temporal_patch_size", where, hi=64, default=2)
    if tps != 2:
        raise ConversionError(f"config.json: temporal_patch_size {tps} is not supported (GGUF splits the Conv3d into "
                              "exactly two temporal slices, as llama.cpp does)")
    hidden_act = str(vc.get("hidden_act", "silu"))
    if hidden_act != "silu":
        raise ConversionError(f"config.json: vision hidden_act {hidden_act!r} is not supported (Glm4v uses 'silu')")
    return VisionHParams(
        n_embd=n_embd,
        n_layer=_int(vc, "depth", where, hi=_MAX_LAYERS),
        n_head=n_head,
        n_ff=n_proj,
        n_proj=n_proj,
        n_merger_ff=_int(vc, "intermediate_size", where),
        patch_size=patch,
        temporal_patch_size=tps,
        merge_size=_int(vc, "spatial_merge_size", where, hi=64, default=2),
        image_size=image_size,
        in_channels=_int(vc, "in_channels", where, hi=64, default=3),
        n_pos=(image_size // patch) ** 2,
        rms_eps=_float(vc, "rms_norm_eps", where, 0.0, 1.0, default=1e-5),
        attention_bias=bool(vc.get("attention_bias", False)),
        hidden_act=hidden_act,
    )


def expected_text_shapes(t: TextHParams) -> dict[str, tuple[int, ...]]:
    """HF (torch-order) shapes of every text tensor, keyed by name without prefix."""
    q, kv = t.n_head * t.head_dim, t.n_head_kv * t.head_dim
    shapes: dict[str, tuple[int, ...]] = {"embed_tokens.weight": (t.n_vocab, t.n_embd), "norm.weight": (t.n_embd,)}
    for i in range(t.n_layer):
        p = f"layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (t.n_embd,),
            p + "self_attn.q_proj.weight": (q, t.n_embd),
            p + "self_attn.q_proj.bias": (q,),
            p + "self_attn.k_proj.weight": (kv, t.n_embd),
            p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, t.n_embd),
            p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (t.n_embd, q),
            p + "post_self_attn_layernorm.weight": (t.n_embd,),
            p + "post_attention_layernorm.weight": (t.n_embd,),
            p + "mlp.gate_up_proj.weight": (2 * t.n_ff, t.n_embd),
            p + "mlp.down_proj.weight": (t.n_embd, t.n_ff),
            p + "post_mlp_layernorm.weight": (t.n_embd,),
        })
    return shapes


def expected_vision_shapes(v: VisionHParams) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """HF shapes of every vision tensor (name without 'model.visual.'), and the subset that is optional."""
    h, m = v.n_embd, v.merge_size
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embed.proj.weight": (h, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size),
        "patch_embed.proj.bias": (h,),
        "post_conv_layernorm.weight": (h,),
        "embeddings.position_embedding.weight": (v.n_pos, h),
        "post_layernorm.weight": (h,),
        "downsample.weight": (v.n_proj, h, m, m),
        "downsample.bias": (v.n_proj,),
        "merger.proj.weight": (v.n_proj, v.n_proj),
        "merger.post_projection_norm.weight": (v.n_proj,),
        "merger.post_projection_norm.bias": (v.n_proj,),
        "merger.gate_proj.weight": (v.n_merger_ff, v.n_proj),
        "merger.up_proj.weight": (v.n_merger_ff, v.n_proj),
        "merger.down_proj.weight": (v.n_proj, v.n_merger_ff),
    }
    optional = {"merger.proj.bias", "merger.gate_proj.bias", "merger.up_proj.bias", "merger.down_proj.bias"}
    shapes.update({"merger.proj.bias": (v.n_proj,), "merger.gate_proj.bias": (v.n_merger_ff,),
                   "merger.up_proj.bias": (v.n_merger_ff,), "merger.down_proj.bias": (v.n_proj,)})
    for i in range(v.n_layer):
        p = f"blocks.{i}."
        shapes.update({
            p + "norm1.weight": (h,),
            p + "norm2.weight": (h,),
            p + "attn.qkv.weight": (3 * h, h),
            p + "attn.proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (v.n_ff, h),
            p + "mlp.up_proj.weight": (v.n_ff, h),
            p + "mlp.down_proj.weight": (h, v.n_ff),
        })
        if v.attention_bias:
            shapes[p + "attn.qkv.bias"] = (3 * h,)
    return shapes, optional


def _check_shapes(found: dict[str, TensorRef], expected: dict[str, tuple[int, ...]], optional: set[str],
                  prefix: str, where: Path) -> None:
    missing = [n for n in expected if n not in found and n not in optional]
    if missing:
        raise ConversionError(f"{where}: {len(missing)} expected tensor(s) missing, e.g. {prefix}{missing[0]} "
                              f"(expected shape {list(expected[missing[0]])}). Incomplete or not a Glm4v checkpoint.")
    for name, ref in found.items():
        if name not in expected:
            raise ConversionError(f"{where}: unexpected tensor {prefix}{name} {list(ref.shape)}; the config does not "
                                  "describe it (wrong config.json, or an unsupported variant)")
        if tuple(ref.shape) != expected[name]:
            raise ConversionError(f"{ref.path}: tensor {prefix}{name} has shape {list(ref.shape)}, expected "
                                  f"{list(expected[name])} from config.json")


def _split(refs: dict[str, TensorRef], prefixes: tuple[str, ...]) -> dict[str, TensorRef]:
    out = {}
    for name, ref in refs.items():
        for p in prefixes:
            if name.startswith(p):
                out[name[len(p):]] = ref
                break
    return out


def _find_chat_template(model_dir: Path, tok_cfg: dict[str, Any]) -> str | None:
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    chat_json = model_dir / "chat_template.json"
    if chat_json.is_file():
        tmpl = _read_json(chat_json, "chat template").get("chat_template")
        if isinstance(tmpl, str):
            return tmpl
    tmpl = tok_cfg.get("chat_template")
    return tmpl if isinstance(tmpl, str) else None


def load_checkpoint(model_dir: str | Path, tensors: dict[str, TensorRef] | None = None) -> Checkpoint:
    """Read and validate a checkpoint directory. `tensors` (full HF names -> TensorRef-like objects)
    replaces the directory's safetensors, e.g. for weights synthesized on the fly."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ConversionError(f"{model_dir}: not a directory. Pass a Hugging Face checkpoint directory "
                              "(config.json + *.safetensors + tokenizer files).")
    cfg = _read_json(model_dir / "config.json", "model config")
    archs = cfg.get("architectures") or []
    if not isinstance(archs, list):
        archs = [archs]
    # Both must agree when present: a glm4v model_type with another class (or the reverse) is not ours.
    if (cfg.get("model_type", "glm4v") != "glm4v" or (archs and not any(a in SUPPORTED_ARCHS for a in archs))
            or ("model_type" not in cfg and not archs)):
        raise ConversionError(
            f"{model_dir}: config.json describes model_type={cfg.get('model_type')!r} architectures={archs}; "
            f"only Glm4vForConditionalGeneration (model_type 'glm4v': GLM-4.1V, AutoGLM-Phone-9B) is supported")
    text = parse_text_hparams(cfg)
    vision = parse_vision_hparams(cfg, text)

    refs = open_checkpoint_tensors(model_dir) if tensors is None else tensors
    vision_refs = _split(refs, VISION_PREFIXES)
    lm_head = next((refs[n] for n in LM_HEAD_NAMES if n in refs), None)
    text_refs = _split({n: r for n, r in refs.items()
                        if n not in LM_HEAD_NAMES and not any(n.startswith(p) for p in VISION_PREFIXES)}, TEXT_PREFIXES)
    _check_shapes(text_refs, expected_text_shapes(text), set(), "model.language_model.", model_dir)
    vshapes, voptional = expected_vision_shapes(vision)
    _check_shapes(vision_refs, vshapes, voptional, "model.visual.", model_dir)
    if lm_head is None and not text.tie_word_embeddings:
        raise ConversionError(f"{model_dir}: no lm_head.weight and tie_word_embeddings is false")
    if lm_head is not None and tuple(lm_head.shape) != (text.n_vocab, text.n_embd):
        raise ConversionError(f"{lm_head.path}: tensor lm_head.weight has shape {list(lm_head.shape)}, expected "
                              f"{[text.n_vocab, text.n_embd]} from config.json")
    unknown = [n for n in refs if n not in LM_HEAD_NAMES and not any(n.startswith(p) for p in TEXT_PREFIXES + VISION_PREFIXES)]
    if unknown:
        raise ConversionError(f"{model_dir}: unexpected tensor {unknown[0]!r} outside the text model and vision tower")

    tok_json = model_dir / "tokenizer.json"
    if not tok_json.is_file():
        raise ConversionError(f"{model_dir}: missing tokenizer.json (the fast tokenizer file); it is required for the "
                              "GGUF vocabulary")
    tok_cfg = _read_json(model_dir / "tokenizer_config.json", "tokenizer config")
    return Checkpoint(
        path=model_dir,
        config=cfg,
        text=text,
        vision=vision,
        text_tensors=text_refs,
        lm_head=lm_head,
        vision_tensors=vision_refs,
        tokenizer_json=tok_json,
        tokenizer_config=tok_cfg,
        chat_template=_find_chat_template(model_dir, tok_cfg),
        generation_config=_read_json(model_dir / "generation_config.json", "generation config", required=False),
        preprocessor_config=_read_json(model_dir / "preprocessor_config.json", "preprocessor config", required=False),
    )


def param_count(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes.values())
