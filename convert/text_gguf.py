"""The text-model GGUF (arch glm4), laid out as llama.cpp's converter lays out GLM-4.1V.

Storage types (documented in README "Converter"): 1-D tensors and norms F32; every weight matrix in
the requested outtype; with q4_0, output.weight is Q6_K as llama-quantize does (the head is the most
quantization-sensitive matrix); row lengths that do not fit the blocks fall back Q6_K -> Q8_0 -> F16.
"""

from __future__ import annotations

import gguf

from autoglm_gguf.errors import ConversionError

from .checkpoint import Checkpoint
from .common import FILE_TYPES, OUTTYPES, T, add_general_metadata, fit_type, n_params, sorted_like_llamacpp
from .gguf_out import GGUFPlan, OutTensor
from .transforms import neox_row_order, permuted_rows, rows_of
from .vocab_export import export_vocab

ARCH = "glm4"

# HF suffix (after "layers.N.") -> GGUF suffix (after "blk.N.")
_LAYER_MAP = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_self_attn_layernorm.weight": "post_attention_norm.weight",  # sandwich norm on the attention output
    "post_attention_layernorm.weight": "ffn_norm.weight",             # HF's name for the pre-MLP norm
    "mlp.gate_up_proj.weight": "ffn_up.weight",                       # fused, gate rows first
    "mlp.down_proj.weight": "ffn_down.weight",
    "post_mlp_layernorm.weight": "post_ffw_norm.weight",
}
_GLOBAL_MAP = {"embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight"}


def gguf_name(hf: str) -> str:
    if hf in _GLOBAL_MAP:
        return _GLOBAL_MAP[hf]
    _, layer, rest = hf.split(".", 2)  # "layers", N, suffix
    return f"blk.{layer}.{_LAYER_MAP[rest]}"


def storage_type(name: str, shape: tuple[int, ...], outtype: str) -> gguf.GGMLQuantizationType:
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return T.F32
    qtype = OUTTYPES[outtype]
    if outtype == "q4_0" and name == "output.weight":
        qtype = T.Q6_K
    return fit_type(qtype, shape[-1])


def eog_token_ids(ckpt: Checkpoint) -> list[int]:
    """All end-of-generation ids: generation_config's eos_token_id (int or list), else config's."""
    ids = ckpt.generation_config.get("eos_token_id", ckpt.config.get("eos_token_id",
                                     (ckpt.config.get("text_config") or {}).get("eos_token_id")))
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < ckpt.text.n_vocab]
    if bad:
        raise ConversionError(f"{ckpt.path}: eos_token_id {bad} in generation_config.json is not a valid token id")
    return ids


def plan_text(ckpt: Checkpoint, path, outtype: str) -> GGUFPlan:
    t = ckpt.text
    refs = list(ckpt.text_tensors.items())
    by_ref = {id(r): hf for hf, r in refs}
    ordered = sorted_like_llamacpp([r for _, r in refs] + ([ckpt.lm_head] if ckpt.lm_head else []))
    q_order = neox_row_order(t.n_head, t.head_dim, t.n_rot) if t.rope_sections else None
    k_order = neox_row_order(t.n_head_kv, t.head_dim, t.n_rot) if t.rope_sections else None

    tensors: list[OutTensor] = []
    for ref in ordered:
        if ref is ckpt.lm_head:
            name = "output.weight"
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
        shape = tuple(ref.shape)
        tensors.append(OutTensor(name, shape, storage_type(name, shape, outtype), source))

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
        # GLM-4 byte-level BPE; "glm4" selects llama.cpp's GLM-4 pre-tokenizer (and no automatic BOS).
        vocab.write(w, pre="glm4")
        # Ours, beyond llama.cpp's keys: every end-of-generation id (llama.cpp keeps only eos/eot).
        w.add_array("autoglm.eog_token_ids", eog)
        # HF's BPE flag that GGUF has no key for (llama.cpp assumes true for glm4): tokenization must match.
        w.add_bool("autoglm.tokenizer.ignore_merges", vocab.ignore_merges)

    return GGUFPlan(path=path, arch=ARCH, metadata=metadata, tensors=tensors)
