"""Grammar-constrained generation: only tokens a grammar allows are sampled.

The grammar engine is llguidance (PyPI `llguidance`). Why it and not xgrammar: llguidance is one abi3
wheel with no dependencies (xgrammar 0.2 requires torch, transformers and triton at install time, which
an offline laptop install should not pull in for a grammar); its Lark-like grammars give a rule a token
budget (`rule[max_tokens=N]`), which the agent uses to bound free-text thinking, refer to special tokens
by name (`<think>`), and allow lexeme intersection/negation (`&`, `~`); and its mask costs tens of
microseconds per token on a 150k vocabulary (measured: see `last_timings["grammar_ms"]`). llama.cpp
links the same library for its `--grammar` with `%llguidance`.

How it plugs in: the native generator asks a constraint object for a bitmask of allowed ids before
each sample (`fill_mask`) and tells it the chosen id (`accept`); `Constraint` adapts an `LLMatcher` to
that. The llguidance tokenizer is built once per loaded model from the GGUF vocabulary: each id's bytes
as our detokenizer produces them, control and user-defined `<...>` tokens marked special (so a grammar
names them, e.g. `<think>`, and free text can never contain them), unused padding ids empty.
"""

from __future__ import annotations

import time

from .errors import AutoGLMError

# GGUF token types (gguf.TokenType)
TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 3, 4, 5


class GrammarError(AutoGLMError, ValueError):
    """A grammar did not compile, or generation reached a state the grammar does not allow."""


def _llguidance():
    try:
        import llguidance
    except ImportError:  # pragma: no cover - a dependency of the package
        raise GrammarError("grammar-constrained generation needs llguidance: pip install llguidance") from None
    return llguidance


class _VocabTokenizer:
    """What llguidance.TokenizerWrapper reads: the vocabulary as bytes plus a tokenize function."""

    def __init__(self, model):
        tokens, types, _ = model.vocab
        n_vocab = model.hparams["n_vocab"]
        self.tokens: list[bytes] = []
        self.special_token_ids: list[int] = []
        for i in range(n_vocab):
            kind = types[i] if i < len(types) else TOKEN_UNUSED
            if kind == TOKEN_UNUSED:
                self.tokens.append(b"")
                continue
            name = tokens[i]
            if kind == TOKEN_CONTROL or (kind == TOKEN_USER_DEFINED and name.startswith("<") and name.endswith(">")):
                # llguidance's marker for a special token, followed by its name as grammars write it
                self.special_token_ids.append(i)
                self.tokens.append(b"\xff" + name.encode("utf-8"))
            else:
                self.tokens.append(model.detokenize([i]))
        self.eos_token_id = model.eog_ids[0]
        self.bos_token_id = None
        self._model = model

    def __call__(self, text: bytes) -> list[int]:
        return self._model.tokenize(text, False)


def tokenizer_for(model):
    """The llguidance tokenizer of a native TextModel (building one reads the whole vocabulary: cache it)."""
    llg = _llguidance()
    vocab = _VocabTokenizer(model)
    return llg.LLTokenizer(llg.TokenizerWrapper(vocab), n_vocab=len(vocab.tokens), eos_token=list(model.eog_ids))


class Constraint:
    """One generation's grammar state, in the shape the native generator calls (fill_mask, accept).
    Counts the time it spends so the per-token cost can be reported."""

    def __init__(self, tokenizer, grammar: str):
        llg = _llguidance()
        self.matcher = llg.LLMatcher(tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise GrammarError(f"the grammar does not compile: {self.matcher.get_error()}")
        self.seconds = 0.0
        self.n_masks = 0

    def fill_mask(self, address: int, n_bytes: int) -> None:
        t0 = time.perf_counter()
        self.matcher.unsafe_compute_mask_ptr(address, n_bytes)
        self.seconds += time.perf_counter() - t0
        self.n_masks += 1
        if self.matcher.is_error():
            raise GrammarError(f"grammar: {self.matcher.get_error()}")

    def accept(self, token: int) -> bool:
        t0 = time.perf_counter()
        ok = self.matcher.consume_token(token)
        self.seconds += time.perf_counter() - t0
        if not ok:
            raise GrammarError(f"grammar: token {token} was refused: {self.matcher.get_error()}")
        return not self.matcher.is_stopped()

    def timings(self) -> dict:
        return {"grammar_ms": self.seconds * 1e3,
                "grammar_ms_per_token": self.seconds * 1e3 / self.n_masks if self.n_masks else 0.0}


def check_grammar(grammar: str, tokenizer=None) -> None:
    """Raise GrammarError if `grammar` (llguidance's Lark syntax) is not valid (special tokens are only
    checked when a tokenizer is given)."""
    is_error, messages = _llguidance().LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
    if is_error:
        raise GrammarError(f"the grammar does not compile: {'; '.join(messages)}")
