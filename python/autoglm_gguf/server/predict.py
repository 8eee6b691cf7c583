"""POST /predict: the simple REST call for one agent step.

Request:  {"image": base64 PNG/JPEG or a data: URL, "text": "task or screen info",
           "history"?: [OpenAI messages of earlier turns], "system"?: "system prompt",
           sampling fields as for chat completions (defaults: Open-AutoGLM's)}
Response: {"thinking", "action": {"_metadata": "do"|"finish", ...} | null, "action_text", "raw",
           "error"?: why the action did not parse, "finish_reason", "usage", "timings"}
"""

from __future__ import annotations

from typing import Any

from ..actions import parse_answer
from ..agent.conversation import AGENT_MAX_TOKENS, AGENT_SAMPLING
from .protocol import GenerationRequest, bad_request, parse_chat, timings, usage


def predict_request(body: Any) -> GenerationRequest:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    image, text = body.get("image"), body.get("text")
    if not isinstance(text, str):
        raise bad_request("'text' must be a string (the task, or the screen info of a later step)", param="text")
    if image is not None and not (isinstance(image, str) and image):
        raise bad_request("'image' must be a base64 string or a data: URL", param="image")
    history = body.get("history") or []
    if not isinstance(history, list):
        raise bad_request("'history' must be a list of chat messages", param="history")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise bad_request("'system' must be a string", param="system")
    content: list[dict] = []
    if image:
        url = image if image.startswith("data:") else f"data:image/png;base64,{image}"
        content.append({"type": "image_url", "image_url": {"url": url}})
    content.append({"type": "text", "text": text})
    messages = ([{"role": "system", "content": system}] if system else []) + history + [
        {"role": "user", "content": content}]
    chat = {k: v for k, v in body.items() if k not in ("image", "text", "history", "system", "stream")}
    defaults = {**AGENT_SAMPLING, "max_tokens": AGENT_MAX_TOKENS}  # Open-AutoGLM's: what the model is served with
    return parse_chat({**defaults, **chat, "messages": messages})


def predict_response(text: str, finish: str, t: dict) -> dict[str, Any]:
    parsed = parse_answer(text)
    out = {"thinking": parsed.thinking, "action": parsed.action, "action_text": parsed.action_text, "raw": text,
           "finish_reason": finish, "usage": usage(t), "timings": timings(t)}
    if parsed.error:
        out["error"] = parsed.error
    return out
