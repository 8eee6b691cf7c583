"""The vision-projector GGUF (arch clip, projector glm4v), laid out as llama.cpp's converter does.

Storage types: 1-D tensors, norms and biases F32; v.position_embd F32 always (it is interpolated at
run time); the conv kernels (v.patch_embd.weight, .weight.1, mm.patch_merger.weight) F16 when the
outtype is f16 and F32 otherwise (never quantized); every other matrix in the outtype's base type
(q4_k -> Q4_K, ...; rows that do not fit its blocks fall back as llama.cpp's do: Q4_K -> Q5_0, then F16).
"""

from __future__ import annotations

import gguf

from ..errors import ConversionError
from ..quant_mix import fit_type, preset
from .checkpoint import Checkpoint
from .common import T, add_general_metadata, n_params, processor_settings, sorted_like_llamacpp
from .gguf_out import GGUFPlan, OutTensor
from .transforms import rows_of, temporal_slice

ARCH = "clip"
PROJECTOR = "glm4v"

_MAP = {
    "patch_embed.proj.bias": "v.patch_embd.bias",
    "post_conv_layernorm.weight": "v.norm_embd.weight",
    "embeddings.position_embedding.weight": "v.position_embd.weight",
    "post_layernorm.weight": "v.post_ln.weight",
    "downsample.weight": "mm.patch_merger.weight",
    "downsample.bias": "mm.patch_merger.bias",
    "merger.proj.weight": "mm.model.fc.weight",
    "merger.proj.bias": "mm.model.fc.bias",
    "merger.post_projection_norm.weight": "mm.post_norm.weight",
    "merger.post_projection_norm.bias": "mm.post_norm.bias",
    "merger.gate_proj.weight": "mm.gate.weight",
    "merger.gate_proj.bias": "mm.gate.bias",
    "merger.up_proj.weight": "mm.up.weight",
    "merger.up_proj.bias": "mm.up.bias",
    "merger.down_proj.weight": "mm.down.weight",
    "merger.down_proj.bias": "mm.down.bias",
}
_BLOCK_MAP = {
    "norm1.weight": "ln1.weight",
    "norm2.weight": "ln2.weight",
    "attn.qkv.weight": "attn_qkv.weight",
    "attn.qkv.bias": "attn_qkv.bias",
    "attn.proj.weight": "attn_out.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
CONV_KERNELS = ("v.patch_embd.weight", "v.patch_embd.weight.1", "mm.patch_merger.weight")


def gguf_name(hf: str) -> str:
    if hf in _MAP:
        return _MAP[hf]
    _, blk, rest = hf.split(".", 2)  # "blocks", N, suffix
    return f"v.blk.{blk}.{_BLOCK_MAP[rest]}"


def storage_type(name: str, shape: tuple[int, ...], outtype: str) -> gguf.GGMLQuantizationType:
    if name in CONV_KERNELS:
        return T.F16 if outtype == "f16" else T.F32
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight") or name == "v.position_embd.weight":
        return T.F32
    return fit_type(preset(outtype).default, shape[-1])


def image_pixel_bounds(ckpt: Checkpoint, settings: dict) -> tuple[int, int]:
    """min/max pixels of HF's smart_resize (preprocessor_config size.shortest_edge / longest_edge)."""
    size = settings.get("size") or {}
    lo = size.get("shortest_edge", settings.get("min_pixels", 112 * 112))
    hi = size.get("longest_edge", settings.get("max_pixels", 28 * 28 * 15000))
    if not (isinstance(lo, int) and isinstance(hi, int) and 0 < lo <= hi):
        raise ConversionError(f"{ckpt.path}: preprocessor_config.json size {size} does not give valid min/max pixels")
    return lo, hi


def plan_mmproj(ckpt: Checkpoint, path, outtype: str) -> GGUFPlan:
    v = ckpt.vision
    by_ref = {id(r): hf for hf, r in ckpt.vision_tensors.items()}
    tensors: list[OutTensor] = []
    for ref in sorted_like_llamacpp(ckpt.vision_tensors.values()):
        hf = by_ref[id(ref)]
        if hf == "patch_embed.proj.weight":
            # Conv3d [out, C, T=2, p, p] -> two Conv2d kernels, one per temporal slice (spec B.1).
            for t, name in enumerate(("v.patch_embd.weight", "v.patch_embd.weight.1")):
                shape = ref.shape[:2] + ref.shape[3:]
                tensors.append(OutTensor(name, shape, storage_type(name, shape, outtype), temporal_slice(ref, t)))
            continue
        name = gguf_name(hf)
        tensors.append(OutTensor(name, tuple(ref.shape), storage_type(name, ref.shape, outtype), rows_of(ref)))

    settings = processor_settings(ckpt)
    for key in ("image_mean", "image_std"):
        if not (isinstance(settings.get(key), list) and len(settings[key]) == v.in_channels):
            raise ConversionError(f"{ckpt.path}: preprocessor_config.json needs '{key}' with {v.in_channels} values "
                                  "(the normalization the vision tower was trained with)")
    min_pixels, max_pixels = image_pixel_bounds(ckpt, settings)
    total = n_params(x.shape for x in tensors)

    def metadata(w: gguf.GGUFWriter) -> None:
        add_general_metadata(w, ckpt, gguf.GGUFType.MMPROJ, total)
        w.add_file_type(preset(outtype).ftype)
        w.add_bool("clip.has_vision_encoder", True)
        w.add_uint32("clip.vision.projection_dim", ckpt.text.n_embd)
        w.add_uint32("clip.vision.image_size", v.image_size)
        w.add_uint32("clip.vision.patch_size", v.patch_size)
        w.add_uint32("clip.vision.embedding_length", v.n_embd)
        # llama.cpp stores the merger width here (vision intermediate_size); the ViT MLP width is in the tensors.
        w.add_uint32("clip.vision.feed_forward_length", v.n_merger_ff)
        w.add_uint32("clip.vision.block_count", v.n_layer)
        w.add_uint32("clip.vision.attention.head_count", v.n_head)
        w.add_array("clip.vision.image_mean", [float(x) for x in settings["image_mean"]])
        w.add_array("clip.vision.image_std", [float(x) for x in settings["image_std"]])
        w.add_string("clip.projector_type", PROJECTOR)
        w.add_bool("clip.use_silu", True)
        w.add_float32("clip.vision.attention.layer_norm_epsilon", v.rms_eps)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        # Ours, beyond llama.cpp's keys (it hard-codes these for glm4v): what HF's preprocessing needs.
        w.add_uint32("autoglm.image_min_pixels", min_pixels)
        w.add_uint32("autoglm.image_max_pixels", max_pixels)
        w.add_uint32("autoglm.vision.spatial_merge_size", v.merge_size)
        w.add_uint32("autoglm.vision.temporal_patch_size", v.temporal_patch_size)

    return GGUFPlan(path=path, arch=ARCH, metadata=metadata, tensors=tensors)
