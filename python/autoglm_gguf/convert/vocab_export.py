"""The GGUF tokenizer block (tokenizer.ggml.*) of a GLM-4 / GLM-4.1V checkpoint.

Read straight from tokenizer.json / tokenizer_config.json / config.json (no transformers). The
rules reproduce what llama.cpp's converter (as vendored in llama-cpp-python 0.3.36) writes for
arch glm4, so that both runtimes read identical vocabularies:

* tokens: one per id in [0, text vocab_size); ids the tokenizer does not define become "[PAD<id>]"
  of type UNUSED; added tokens are CONTROL when flagged special or shaped like a control token
  (<|...|>), else USER_DEFINED; everything else is NORMAL.
* special ids: the first source that names a role wins, in this order: the tokenizer post-processor
  (a TemplateProcessing that starts with a special token makes it bos), tokenizer_config.json's
  *_token strings (resolved against tokenizer.json's added tokens), integer *_token_id entries in
  config.json (root, then text_config), and finally GLM's own roles looked up by string
  (eos/unk/bos = <|endoftext|>, eot = <|user|>). Keys are written in the order roles were first set.
* add_bos/add_eos flags from the post-processor (ByteLevel: both false), then tokenizer_config.
* merges as "left right" strings (spaces inside a part encoded as U+0120), chat template verbatim
  (tokenizer_config's chat_template, else chat_template.jinja, else chat_template.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import gguf

from ..errors import ConversionError
from .checkpoint import Checkpoint

ROLES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")  # tokenizer_config / config.json lookup order
GLM_DEFAULT_ROLES = (("eos", "<|endoftext|>"), ("eot", "<|user|>"), ("unk", "<|endoftext|>"), ("bos", "<|endoftext|>"))
_CONTROL_LOOKING = frozenset({"<pad>", "<mask>", "<2mass>", "[@BOS@]"})


def looks_like_control(tok: str) -> bool:
    return (tok in _CONTROL_LOOKING or (tok.startswith("<|") and tok.endswith("|>"))
            or (tok.startswith("<｜") and tok.endswith("｜>")) or (tok.startswith("<unused") and tok.endswith(">")))


@dataclass
class VocabExport:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    special_ids: dict[str, int] = field(default_factory=dict)   # role -> id, in first-set order
    add_flags: dict[str, bool] = field(default_factory=dict)    # role -> add_<role>_token, in first-set order
    chat_template: str | None = None
    ignore_merges: bool = False                                 # tokenizer.json model.ignore_merges

    def set_role(self, role: str, tid: Any) -> None:
        if isinstance(tid, int) and not isinstance(tid, bool) and 0 <= tid < len(self.tokens):
            self.special_ids.setdefault(role, tid)

    def write(self, w: gguf.GGUFWriter, pre: str) -> None:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(self.tokens)
        w.add_token_types(self.token_types)
        if self.merges:
            w.add_token_merges(self.merges)
        for role, tid in self.special_ids.items():
            adder = getattr(w, f"add_{role}_token_id", None)  # gguf-py has no writer for "cls": skipped, as in llama.cpp
            if adder:
                adder(tid)
        for role, flag in self.add_flags.items():
            adder = getattr(w, f"add_add_{role}_token", None)
            if adder:
                adder(flag)
        if self.chat_template is not None:
            w.add_chat_template(self.chat_template)


def _merge_strings(merges: list[Any]) -> list[str]:
    if not merges or isinstance(merges[0], str):
        return list(merges)
    return [" ".join(part.replace(" ", "\u0120") for part in pair) for pair in merges]


def _content(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return entry["content"]
    return None


def export_vocab(ckpt: Checkpoint) -> VocabExport:
    try:
        tok = json.loads(ckpt.tokenizer_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConversionError(f"{ckpt.tokenizer_json}: cannot parse: {e}") from e
    model = tok.get("model") or {}
    if model.get("type") != "BPE":
        raise ConversionError(f"{ckpt.tokenizer_json}: tokenizer model type {model.get('type')!r}; GLM-4 uses a "
                              "byte-level BPE ('BPE')")
    vocab: dict[str, int] = dict(model.get("vocab") or {})
    added: list[dict[str, Any]] = list(tok.get("added_tokens") or [])
    added_by_id = {a["id"]: a for a in added}
    id_to_tok = {i: t for t, i in vocab.items()}
    id_to_tok.update({a["id"]: a["content"] for a in added})

    n_vocab = ckpt.text.n_vocab
    if id_to_tok and max(id_to_tok) >= n_vocab:
        raise ConversionError(f"{ckpt.tokenizer_json}: token id {max(id_to_tok)} is outside the model's vocab_size "
                              f"{n_vocab} (config.json text_config.vocab_size)")
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        t = id_to_tok.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
        elif i in added_by_id:
            if added_by_id[i].get("special") or looks_like_control(t):
                tokens.append(t)
                types.append(int(gguf.TokenType.CONTROL))
            else:
                tokens.append(t.replace("\u2581", " "))
                types.append(int(gguf.TokenType.USER_DEFINED))
        else:
            tokens.append(t)
            types.append(int(gguf.TokenType.NORMAL))

    out = VocabExport(tokens=tokens, token_types=types, merges=_merge_strings(model.get("merges") or []),
                      ignore_merges=bool(model.get("ignore_merges", False)))
    tok_cfg = dict(ckpt.tokenizer_config)
    _apply_post_processor(tok.get("post_processor"), tok_cfg, out)

    if tok_cfg:
        out.chat_template = ckpt.chat_template
        for role in ROLES:
            flag = tok_cfg.get(f"add_{role}_token")
            if isinstance(flag, bool):
                out.add_flags.setdefault(role, flag)
            content = _content(tok_cfg.get(f"{role}_token"))
            if content is not None:
                out.set_role(role, next((a["id"] for a in added if a.get("content") == content), None))
    tc = ckpt.config.get("text_config") or {}
    for role in ROLES:
        tid = ckpt.config.get(f"{role}_token_id")
        out.set_role(role, tid if tid is not None else tc.get(f"{role}_token_id"))

    added_ids = {a["content"]: a["id"] for a in added}
    for role, content in GLM_DEFAULT_ROLES:
        if content not in added_ids:
            raise ConversionError(f"{ckpt.tokenizer_json}: GLM special token {content!r} is not an added token; "
                                  "not a GLM-4 tokenizer?")
        out.set_role(role, added_ids[content])
    return out


def _apply_post_processor(pp: dict[str, Any] | None, tok_cfg: dict[str, Any], out: VocabExport) -> None:
    """Roles and add-flags implied by tokenizer.json's post_processor (a single one or a Sequence)."""
    if not pp:
        return
    for proc in pp.get("processors", [pp]):
        kind = proc.get("type")
        if kind == "ByteLevel":
            out.add_flags.setdefault("bos", False)
            out.add_flags.setdefault("eos", False)
        elif kind == "TemplateProcessing":
            single = proc.get("single") or []
            first = single[0].get("SpecialToken", {}).get("id") if len(single) > 1 else None
            if first:
                bos, cls = tok_cfg.get("bos_token"), tok_cfg.get("cls_token")
                if first not in (bos, cls):
                    # A leading special token no role names yet (GLM: "[gMASK]") is the sequence start.
                    if not bos:
                        tok_cfg["bos_token"] = first
                    if not cls:
                        tok_cfg["cls_token"] = first
                out.add_flags["bos"] = first in (tok_cfg.get("bos_token"), tok_cfg.get("cls_token"))
        elif kind is not None:
            # Other processors (Roberta/Bert) do not occur in GLM tokenizers.
            raise ConversionError(f"tokenizer.json: post_processor type {kind!r} is not supported for GLM-4")
