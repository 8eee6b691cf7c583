"""The text-model GGUF (arch glm4), laid out as llama.cpp's converter lays out GLM-4.1V.

Storage types (documented in README "Converter"): 1-D tensors and norms F32; the weight matrices as
llama-quantize's preset `outtype` assigns them (quant_mix.plan_types: e.g. q4_k_m puts attn_v and
some ffn_down in Q6_K and the output head in Q6_K), row lengths that do not fit a type's blocks
falling back as llama.cpp's do. With an importance matrix, every quantized matrix is weighted by it.
"""

from __future__ import annotations

import gguf

from ..errors import ConversionError
from ..quant_mix import MixOptions, ModelShape, TensorInfo, plan_types, preset, requires_imatrix
from .checkpoint import Checkpoint
from .common import FILE_TYPES, T, add_general_metadata, n_params, sorted_like_llamacpp
from .gguf_out import GGUFPlan, OutTensor
from .names import KEY, TEXT_ARCH, tensor_name
from .transforms import neox_row_order, permuted_rows, rows_of
from .vocab_export import export_vocab

ARCH = TEXT_ARCH

# HF suffix (after "layers.N.") -> entry of the runtime's name table (names.py)
_LAYER_MAP = {
    "input_layernorm.weight": "ATTN_NORM",
    "self_attn.q_proj.weight": "ATTN_Q",
    "self_attn.q_proj.bias": "ATTN_Q_B",
    "self_attn.k_proj.weight": "ATTN_K",
    "self_attn.k_proj.bias": "ATTN_K_B",
    "self_attn.v_proj.weight": "ATTN_V",
    "self_attn.v_proj.bias": "ATTN_V_B",
    "self_attn.o_proj.weight": "ATTN_OUT",
    "post_self_attn_layernorm.weight": "ATTN_POST_NORM",  # sandwich norm on the attention output
    "post_attention_layernorm.weight": "FFN_NORM",        # HF's name for the pre-MLP norm
    "mlp.gate_up_proj.weight": "FFN_UP",                  # fused, gate rows first
    "mlp.down_proj.weight": "FFN_DOWN",
    "post_mlp_layernorm.weight": "FFN_POST_NORM",
}
_GLOBAL_MAP = {"embed_tokens.weight": "TOKEN_EMBD", "norm.weight": "OUTPUT_NORM"}


def gguf_name(hf: str) -> str:
    if hf in _GLOBAL_MAP:
        return tensor_name(_GLOBAL_MAP[hf])
    _, layer, rest = hf.split(".", 2)  # "layers", N, suffix
    return tensor_name(_LAYER_MAP[rest], layer)


def storage_types(named_shapes: list[tuple[str, tuple[int, ...]]], t, outtype: str, has_imatrix: bool
                  ) -> dict[str, gguf.GGMLQuantizationType]:
    """name -> type for every text tensor (shapes in numpy order), by llama-quantize's mix for `outtype`."""
    infos = [TensorInfo(name, tuple(reversed(shape)), T.F32) for name, shape in named_shapes]
    shape = ModelShape(n_layer=t.n_layer, n_head=t.n_head, n_head_kv=t.n_head_kv)
    plan = plan_types(infos, shape, preset(outtype), MixOptions(has_imatrix=has_imatrix))
    return {info.name: qtype for info, qtype in plan}


def eog_token_ids(ckpt: Checkpoint) -> list[int]:
    """All end-of-generation ids: generation_config's eos_token_id (int or list), else config's."""
    ids = ckpt.generation_config.get("eos_token_id", ckpt.config.get("eos_token_id",
                                     (ckpt.config.get("text_config") or {}).get("eos_token_id")))
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < ckpt.text.n_vocab]
    if bad:
        raise ConversionError(f"{ckpt.path}: eos_token_id {bad} in generation_config.json is not a valid token id")
    return ids


def plan_text(ckpt: Checkpoint, path, outtype: str, imatrix=None, imatrix_path: str = "") -> GGUFPlan:
    """imatrix: an autoglm_gguf.imatrix.Imatrix (read from imatrix_path) or None."""
    t = ckpt.text
    refs = list(ckpt.text_tensors.items())
    by_ref = {id(r): hf for hf, r in refs}
    ordered = sorted_like_llamacpp([r for _, r in refs] + ([ckpt.lm_head] if ckpt.lm_head else []))
    q_order = neox_row_order(t.n_head, t.head_dim, t.n_rot) if t.rope_sections else None
    k_order = neox_row_order(t.n_head_kv, t.head_dim, t.n_rot) if t.rope_sections else None

    named: list[tuple[str, tuple[int, ...], object]] = []
    for ref in ordered:
        if ref is ckpt.lm_head:
            name = tensor_name("OUTPUT")
            source = rows_of(ref)
        else:
            hf = by_ref[id(ref)]
            name = gguf_name(hf)
            # M-RoPE in ggml pairs rotary dims NeoX-style; HF GLM-4V pairs them interleaved (spec A.3).
            if q_order is not None and ".self_attn.q_proj." in hf:
                source = permuted_rows(ref, q_order)
            elif k_order is not None and ".self_attn.k_proj." in hf:
                source = permuted_rows(ref, k_order)
            else:
                source = rows_of(ref)
        named.append((name, tuple(ref.shape), source))
    types = storage_types([(n, s) for n, s, _ in named], t, outtype, imatrix is not None)
    tensors: list[OutTensor] = []
    for name, shape, source in named:
        qtype = types[name]
        weights = None
        if imatrix is not None and qtype not in (T.F32, T.F16, T.BF16):
            weights = imatrix.entries.get(name)
            if weights is not None and weights.size != shape[-1]:
                raise ConversionError(f"importance matrix entry {name} has {weights.size} values, the tensor has "
                                      f"{shape[-1]} columns: the imatrix was computed for another model")
        if weights is None and requires_imatrix(name, qtype, preset(outtype)):
            raise ConversionError(f"--outtype {outtype}: {name} would be {qtype.name}, which needs an importance matrix; "
                                  "pass --imatrix FILE (compute one with `autoglm-gguf imatrix` on an F16 conversion)")
        tensors.append(OutTensor(name, shape, qtype, source, weights))

    vocab = export_vocab(ckpt)          # validated now, before any output file exists
    eog = eog_token_ids(ckpt)
    total = n_params(x.shape for x in tensors)
    head_dim_in_config = "head_dim" in (ckpt.config.get("text_config") or {}) or "head_dim" in ckpt.config

    def metadata(w: gguf.GGUFWriter) -> None:
        add_general_metadata(w, ckpt, gguf.GGUFType.MODEL, total)
        w.add_block_count(t.n_layer)
        w.add_context_length(t.n_ctx_train)
        w.add_embedding_length(t.n_embd)
        w.add_feed_forward_length(t.n_ff)
        w.add_head_count(t.n_head)
        w.add_head_count_kv(t.n_head_kv)
        if t.rope_sections:
            w.add_rope_dimension_sections(list(t.rope_sections) + [0] * (4 - len(t.rope_sections)))
        w.add_rope_freq_base(t.rope_theta)
        w.add_layer_norm_rms_eps(t.rms_eps)
        if head_dim_in_config:
            w.add_key_length(t.head_dim)
            w.add_value_length(t.head_dim)
        w.add_file_type(FILE_TYPES[outtype])
        w.add_rope_dimension_count(t.n_rot)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if imatrix is not None:  # the keys llama-quantize records
            w.add_string("quantize.imatrix.file", imatrix_path)
            if imatrix.datasets:
                w.add_string("quantize.imatrix.dataset", imatrix.datasets[0])
            w.add_uint32("quantize.imatrix.entries_count", len(imatrix.entries))
            if imatrix.chunk_count > 0:
                w.add_uint32("quantize.imatrix.chunks_count", imatrix.chunk_count)
        # GLM-4 byte-level BPE; "glm4" selects llama.cpp's GLM-4 pre-tokenizer (and no automatic BOS).
        vocab.write(w, pre="glm4")
        # Ours, beyond llama.cpp's keys: every end-of-generation id (llama.cpp keeps only eos/eot).
        w.add_array(KEY.AUTOGLM_EOG_IDS, eog)
        # HF's BPE flag that GGUF has no key for (llama.cpp assumes true for glm4): tokenization must match.
        w.add_bool(KEY.AUTOGLM_IGNORE_MERGES, vocab.ignore_merges)

    return GGUFPlan(path=path, arch=ARCH, metadata=metadata, tensors=tensors)
