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
from .names import KEY, VISION_ARCH, VISION_PROJECTOR, tensor_name
from .transforms import rows_of, temporal_slice

ARCH = VISION_ARCH
PROJECTOR = VISION_PROJECTOR

# HF name (after "model.visual.") -> entry of the runtime's name table (names.py)
_MAP = {
    "patch_embed.proj.bias": "V_PATCH_EMBD_B",
    "post_conv_layernorm.weight": "V_NORM_EMBD",
    "embeddings.position_embedding.weight": "V_POS_EMBD",
    "post_layernorm.weight": "V_POST_LN",
    "downsample.weight": "MM_DOWNSAMPLE",
    "downsample.bias": "MM_DOWNSAMPLE_B",
    "merger.proj.weight": "MM_FC",
    "merger.proj.bias": "MM_FC_B",
    "merger.post_projection_norm.weight": "MM_POST_NORM",
    "merger.post_projection_norm.bias": "MM_POST_NORM_B",
    "merger.gate_proj.weight": "MM_GATE",
    "merger.gate_proj.bias": "MM_GATE_B",
    "merger.up_proj.weight": "MM_UP",
    "merger.up_proj.bias": "MM_UP_B",
    "merger.down_proj.weight": "MM_DOWN",
    "merger.down_proj.bias": "MM_DOWN_B",
}
# suffix after "blocks.N."
_BLOCK_MAP = {
    "norm1.weight": "V_LN1",
    "norm2.weight": "V_LN2",
    "attn.qkv.weight": "V_ATTN_QKV",
    "attn.qkv.bias": "V_ATTN_QKV_B",
    "attn.proj.weight": "V_ATTN_OUT",
    "mlp.gate_proj.weight": "V_FFN_GATE",
    "mlp.up_proj.weight": "V_FFN_UP",
    "mlp.down_proj.weight": "V_FFN_DOWN",
}
PATCH_KERNELS = (tensor_name("V_PATCH_EMBD"), tensor_name("V_PATCH_EMBD_1"))  # the Conv3d's two time slices
CONV_KERNELS = (*PATCH_KERNELS, tensor_name("MM_DOWNSAMPLE"))
POS_EMBD = tensor_name("V_POS_EMBD")


def gguf_name(hf: str) -> str:
    if hf in _MAP:
        return tensor_name(_MAP[hf])
    _, blk, rest = hf.split(".", 2)  # "blocks", N, suffix
    return tensor_name(_BLOCK_MAP[rest], blk)


def storage_type(name: str, shape: tuple[int, ...], outtype: str) -> gguf.GGMLQuantizationType:
    if name in CONV_KERNELS:
        return T.F16 if outtype == "f16" else T.F32
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight") or name == POS_EMBD:
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
            for t, name in enumerate(PATCH_KERNELS):
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
        w.add_bool(KEY.CLIP_HAS_VISION_ENCODER, True)
        w.add_uint32(KEY.CLIP_PROJECTION_DIM, ckpt.text.n_embd)
        w.add_uint32(KEY.CLIP_IMAGE_SIZE, v.image_size)
        w.add_uint32(KEY.CLIP_PATCH_SIZE, v.patch_size)
        w.add_uint32(KEY.CLIP_EMBEDDING_LENGTH, v.n_embd)
        # llama.cpp stores the merger width here (vision intermediate_size); the ViT MLP width is in the tensors.
        w.add_uint32(KEY.CLIP_FEED_FORWARD_LENGTH, v.n_merger_ff)
        w.add_uint32(KEY.CLIP_BLOCK_COUNT, v.n_layer)
        w.add_uint32(KEY.CLIP_HEAD_COUNT, v.n_head)
        w.add_array(KEY.CLIP_IMAGE_MEAN, [float(x) for x in settings["image_mean"]])
        w.add_array(KEY.CLIP_IMAGE_STD, [float(x) for x in settings["image_std"]])
        w.add_string(KEY.CLIP_PROJECTOR_TYPE, PROJECTOR)
        w.add_bool(KEY.CLIP_USE_SILU, True)
        w.add_float32(KEY.CLIP_EPS, v.rms_eps)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        # Ours, beyond llama.cpp's keys (it hard-codes these for glm4v): what HF's preprocessing needs.
        w.add_uint32(KEY.AUTOGLM_IMAGE_MIN_PIXELS, min_pixels)
        w.add_uint32(KEY.AUTOGLM_IMAGE_MAX_PIXELS, max_pixels)
        w.add_uint32(KEY.AUTOGLM_SPATIAL_MERGE_SIZE, v.merge_size)
        w.add_uint32(KEY.AUTOGLM_TEMPORAL_PATCH_SIZE, v.temporal_patch_size)

    return GGUFPlan(path=path, arch=ARCH, metadata=metadata, tensors=tensors)
