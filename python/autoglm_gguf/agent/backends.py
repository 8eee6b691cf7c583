"""Where the agent's answers come from: the model in this process (its session is kept across steps, so
each step computes only the new turn), or any OpenAI-compatible endpoint (our server, vLLM)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from ..errors import AutoGLMError
from ..grammar import TOKEN_CONTROL, TOKEN_USER_DEFINED
from .answer_grammar import DEFAULT_STRING_CHARS, answer_grammar, thinking_budget
from .conversation import AGENT_MAX_TOKENS, AGENT_SAMPLING

OnPiece = Callable[[str], None]


class ModelBackend(Protocol):
    def reply(self, messages: list[dict], on_piece: OnPiece) -> tuple[str, dict]:
        """Stream one answer: pieces to on_piece; returns (text, timings)."""


def _tags_are_special(llm) -> bool:
    """Whether <think>, </think> and <answer> are single special tokens of the model's vocabulary."""
    _, types, _ = llm._model.vocab
    for tag in ("<think>", "</think>", "<answer>"):
        ids = llm.tokenize(tag, special=True)
        if len(ids) != 1 or types[ids[0]] not in (TOKEN_CONTROL, TOKEN_USER_DEFINED):
            return False
    return True


class LocalModel:
    """The model in this process. grammar=True (the default) constrains each answer to a well-formed
    action (answer_grammar.py): the reply always parses, and generation ends as the call closes."""

    def __init__(self, llm, *, image_max_pixels: int | None = None, max_tokens: int = AGENT_MAX_TOKENS,
                 sampling: dict | None = None, grammar: bool = True, max_thinking_tokens: int | None = None,
                 max_string_chars: int = DEFAULT_STRING_CHARS):
        if llm.vision is None:
            raise AutoGLMError("the agent needs the vision projector: load the model with its mmproj file "
                               "(--mmproj, or an mmproj-*.gguf beside the model)")
        self.llm, self.image_max_pixels, self.max_tokens = llm, image_max_pixels, max_tokens
        self.sampling = {**AGENT_SAMPLING, **(sampling or {})}
        fits = thinking_budget(max_tokens, max_string_chars)
        if max_thinking_tokens is not None and max_thinking_tokens > fits:
            raise ValueError(f"max_thinking_tokens={max_thinking_tokens} leaves too little of max_tokens={max_tokens} "
                             f"for the answer (at most {fits} with strings of {max_string_chars} characters)")
        self.grammar = (answer_grammar(max_thinking_tokens=max_thinking_tokens or fits,
                                       max_string_chars=max_string_chars, special_tags=_tags_are_special(llm))
                        if grammar else None)

    def reply(self, messages: list[dict], on_piece: OnPiece) -> tuple[str, dict]:
        t0 = time.perf_counter()
        text, first = [], None
        for chunk in self.llm.create_chat_completion(messages, stream=True, max_tokens=self.max_tokens,
                                                     image_max_pixels=self.image_max_pixels,
                                                     grammar=self.grammar, openai_penalties=True,
                                                     **self.sampling):
            piece = chunk["choices"][0]["delta"].get("content")
            if piece:
                first = first or time.perf_counter()
                text.append(piece)
                on_piece(piece)
        t = dict(self.llm.last_timings or {})
        t["ttft_ms"] = ((first or time.perf_counter()) - t0) * 1e3
        t["finish_reason"] = self.llm.last_finish_reason
        return "".join(text), t


class RemoteModel:
    """An OpenAI-compatible endpoint. grammar=True sends the answer grammar as the `grammar` extension
    field, which our server applies; servers without it (vLLM) ignore the field, and the reply is then
    unconstrained."""

    def __init__(self, base_url: str, model: str = "autoglm-phone-9b", api_key: str = "EMPTY", *,
                 max_tokens: int = AGENT_MAX_TOKENS, sampling: dict | None = None, timeout: float = 3600,
                 grammar: bool = True):
        try:
            import openai
        except ImportError:
            raise AutoGLMError("--base-url needs the openai package: pip install openai") from None
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout)
        self.model, self.max_tokens = model, max_tokens
        self.sampling = {**AGENT_SAMPLING, **(sampling or {})}
        self.extra_body = ({"grammar": answer_grammar(max_thinking_tokens=thinking_budget(max_tokens))}
                           if grammar else None)

    def reply(self, messages: list[dict], on_piece: OnPiece) -> tuple[str, dict]:
        import openai

        t0 = time.perf_counter()
        text, first, timings, finish = [], None, {}, None
        try:
            stream = self.client.chat.completions.create(model=self.model, messages=messages, stream=True,
                                                         max_tokens=self.max_tokens, extra_body=self.extra_body,
                                                         **self.sampling)
            for chunk in stream:
                extra = chunk.model_extra or {}
                timings = extra.get("timings", timings)  # our server's extension; vLLM has none
                if not chunk.choices:
                    continue
                finish = chunk.choices[0].finish_reason or finish
                piece = chunk.choices[0].delta.content
                if piece:
                    first = first or time.perf_counter()
                    text.append(piece)
                    on_piece(piece)
        except openai.APIError as e:
            raise AutoGLMError(f"the model endpoint failed: {e}") from None
        return "".join(text), {**timings, "ttft_ms": ((first or time.perf_counter()) - t0) * 1e3,
                               "finish_reason": finish}
