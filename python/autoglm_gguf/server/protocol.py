"""The OpenAI wire format: request validation (every mistake becomes a 4xx naming the field) and
response shapes. ref: OpenAI's chat-completions API reference; vLLM's and llama-server's extensions
(`top_k`, `min_p`, `repetition_penalty`, `timings`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class APIError(Exception):
    """An error with its HTTP status and OpenAI error body: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


MAX_GRAMMAR_CHARS = 1 << 16


@dataclass
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repeat_penalty: float = 1.0

    def native(self) -> dict[str, Any]:
        # OpenAI/vLLM penalty semantics: frequency/presence over generated tokens only.
        return {**self.__dict__, "openai_penalties": True}


@dataclass
class GenerationRequest:
    """What a chat or completion request asks for, validated."""
    messages: list[dict[str, Any]] | None = None   # chat
    prompt: str | None = None                      # completion (raw text)
    sampling: Sampling = field(default_factory=Sampling)
    max_tokens: int | None = None                  # None: until the context is full
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    image_max_pixels: int | None = None
    ignore_eos: bool = False                       # vLLM/llama-server extension: generate past end-of-generation
    grammar: str | None = None                     # extension: llguidance Lark grammar the output must match


def _number(body: dict, key: str, lo: float, hi: float, default, *, integer: bool = False):
    v = body.get(key)
    if v is None:
        return default
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or (not integer and not math.isfinite(v)):
        kind = "an integer" if integer else "a number"
        raise bad_request(f"'{key}' must be {kind}, got {v!r}", param=key)
    if not lo <= v <= hi:
        raise bad_request(f"'{key}' must be between {lo} and {hi}, got {v}", param=key)
    return int(v) if integer else float(v)


def _parse_common(body: dict, req: GenerationRequest) -> GenerationRequest:
    n = body.get("n")
    if n is not None and n != 1:
        raise bad_request(f"'n' = {n!r} is not supported: this server returns one choice per request (send n=1 "
                          "or several requests)", param="n")
    s = req.sampling
    s.temperature = _number(body, "temperature", 0.0, 2.0, 1.0)
    s.top_p = _number(body, "top_p", 0.0, 1.0, 1.0)
    if s.top_p == 0.0:
        s.top_p = 1e-9  # OpenAI accepts 0: only the most likely token
    s.top_k = _number(body, "top_k", -1, 1 << 30, 0, integer=True)
    s.top_k = max(s.top_k, 0)  # vLLM: -1 = off
    s.min_p = _number(body, "min_p", 0.0, 1.0, 0.0)
    s.frequency_penalty = _number(body, "frequency_penalty", -2.0, 2.0, 0.0)
    s.presence_penalty = _number(body, "presence_penalty", -2.0, 2.0, 0.0)
    s.repeat_penalty = _number(body, "repetition_penalty", 1e-3, 100.0, 1.0)
    for key in ("max_completion_tokens", "max_tokens"):
        if body.get(key) is not None:
            req.max_tokens = _number(body, key, 1, 1 << 30, None, integer=True)
            break
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(x, str) and x for x in stop)):
        raise bad_request("'stop' must be a non-empty string or a list of non-empty strings", param="stop")
    if stop and len(stop) > 16:
        raise bad_request("'stop' has more than 16 strings", param="stop")
    req.stop = list(stop or [])
    req.seed = _number(body, "seed", -(1 << 63), (1 << 64) - 1, None, integer=True)
    if req.seed is not None:
        req.seed &= (1 << 64) - 1
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise bad_request("'stream' must be true or false", param="stream")
    req.stream = bool(stream)
    opts = body.get("stream_options")
    if opts is not None:
        if not isinstance(opts, dict):
            raise bad_request("'stream_options' must be an object", param="stream_options")
        req.include_usage = bool(opts.get("include_usage", False))
    req.image_max_pixels = _number(body, "image_max_pixels", 1, 1 << 40, None, integer=True)
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise bad_request("'ignore_eos' must be true or false", param="ignore_eos")
    req.ignore_eos = ignore_eos
    grammar = body.get("grammar")
    if grammar is not None:
        if not isinstance(grammar, str) or not grammar.strip() or len(grammar) > MAX_GRAMMAR_CHARS:
            raise bad_request(f"'grammar' must be a non-empty string of at most {MAX_GRAMMAR_CHARS} characters "
                              "(llguidance's Lark syntax)", param="grammar")
        from ..grammar import GrammarError, check_grammar

        try:
            check_grammar(grammar)
        except GrammarError as e:
            raise bad_request(str(e), param="grammar") from None
        req.grammar = grammar
    return req


CHAT_ROLES = ("system", "user", "assistant", "observation")


def parse_chat(body: Any) -> GenerationRequest:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad_request("'messages' must be a non-empty list of {role, content} objects", param="messages")
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"{where} must be an object with 'role' and 'content'", param=where)
        if m.get("role") not in CHAT_ROLES:
            raise bad_request(f"{where}.role must be one of {', '.join(CHAT_ROLES)}, got {m.get('role')!r}",
                              param=f"{where}.role")
        content = m.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise bad_request(f"{where}.content must be a string or a list of parts", param=f"{where}.content")
        for j, part in enumerate(content):
            pw = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise bad_request(f"{pw}.text must be a string", param=f"{pw}.text")
            elif kind == "image_url":
                ref = part.get("image_url")
                url = ref.get("url") if isinstance(ref, dict) else ref
                if not isinstance(url, str) or not url:
                    raise bad_request(f"{pw}.image_url.url must be a non-empty string (a data: URL)", param=pw)
            else:
                raise bad_request(f"{pw}: unsupported content part type {kind!r} (supported: text, image_url)",
                                  param=pw)
    return _parse_common(body, GenerationRequest(messages=msgs))


def parse_completion(body: Any) -> GenerationRequest:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise bad_request("'prompt' must be a non-empty string (one prompt per request)", param="prompt")
    req = _parse_common(body, GenerationRequest(prompt=prompt))
    if req.max_tokens is None:
        req.max_tokens = 16  # OpenAI's default for completions
    return req


# ------------------------------------------------------------------------------------------ responses
def usage(t: dict[str, Any]) -> dict[str, Any]:
    p, c = int(t.get("prompt_tokens", 0)), int(t.get("generated_tokens", 0))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": int(t.get("prompt_tokens_reused", 0))}}


def timings(t: dict[str, Any]) -> dict[str, Any]:
    """llama-server's `timings` extension, plus the image encoder's share."""
    n_eval = int(t.get("prompt_tokens", 0)) - int(t.get("prompt_tokens_reused", 0))
    return {"prompt_n": n_eval, "prompt_ms": t.get("prompt_ms", 0.0),
            "prompt_per_second": t.get("prompt_tokens_per_s", 0.0), "cache_n": int(t.get("prompt_tokens_reused", 0)),
            "predicted_n": int(t.get("generated_tokens", 0)), "predicted_ms": t.get("generation_ms", 0.0),
            "predicted_per_second": t.get("generation_tokens_per_s", 0.0),
            "image_n": int(t.get("image_tokens", 0)), "image_ms": t.get("image_encode_ms", 0.0)}


def chat_chunk(base: dict, piece: str | None, finish: str | None, first: bool = False,
               usage_only: bool = False) -> dict[str, Any]:
    delta = {"role": "assistant"} if first else {"content": piece} if piece else {}
    choices = [] if usage_only else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return {**base, "object": "chat.completion.chunk", "choices": choices}


def chat_response(base: dict, text: str, finish: str) -> dict[str, Any]:
    return {**base, "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": finish}]}


def completion_chunk(base: dict, piece: str | None, finish: str | None, first: bool = False,
                     usage_only: bool = False) -> dict[str, Any] | None:
    if first:
        return None  # completions have no role chunk
    choices = [] if usage_only else [{"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}]
    return {**base, "object": "text_completion", "choices": choices}


def completion_response(base: dict, text: str, finish: str) -> dict[str, Any]:
    return {**base, "object": "text_completion", "choices": [
        {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}
