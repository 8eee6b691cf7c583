"""AutoGLM's answer format: `<think>reasoning</think><answer>do(action="Tap", element=[500,320])`, or
`finish(message="...")`. Parsed without evaluating anything: the call is read with `ast` and only
literal arguments are accepted."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

ACTION_CALLS = ("do", "finish")


@dataclass
class ParsedAnswer:
    thinking: str
    action_text: str                 # the call as the model wrote it, e.g. do(action="Tap", element=[500,320])
    action: dict[str, Any] | None    # {"_metadata": "do"|"finish", **keyword arguments}, or None if unparseable
    error: str | None = None


def _between(text: str, start: str, end: str) -> str | None:
    i = text.find(start)
    if i < 0:
        return None
    j = text.find(end, i + len(start))
    return text[i + len(start): j if j >= 0 else len(text)]


def split_answer(text: str) -> tuple[str, str]:
    """(thinking, action text) of a model answer; the action starts at the first do(/finish( call."""
    starts = [i for i in (text.find("finish(message="), text.find("do(action=")) if i >= 0]
    if starts:
        i = min(starts)
        thinking, action = text[:i], text[i:]
    else:
        answer = _between(text, "<answer>", "</answer>")
        thinking, action = (text.split("<answer>", 1)[0], answer) if answer is not None else ("", text)
    think = _between(thinking, "<think>", "</think>")
    thinking = think if think is not None else thinking
    for tag in ("<think>", "</think>", "<answer>"):
        thinking = thinking.replace(tag, "")
    return thinking.strip(), action.replace("</answer>", "").strip()


def parse_action(action_text: str) -> dict[str, Any]:
    """`do(action="Tap", element=[500, 320])` -> {"_metadata": "do", "action": "Tap", "element": [500, 320]}.
    Raises ValueError naming what is wrong."""
    try:
        node = ast.parse(action_text.strip(), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"not a call expression: {e.msg}") from None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ACTION_CALLS):
        raise ValueError(f"expected do(...) or finish(...), got {action_text[:80]!r}")
    if node.args:
        raise ValueError(f"{node.func.id}(...) takes keyword arguments only")
    out: dict[str, Any] = {"_metadata": node.func.id}
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError("**kwargs are not allowed in an action")
        try:
            out[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
            raise ValueError(f"argument {kw.arg!r} is not a literal") from None
    if node.func.id == "do" and not isinstance(out.get("action"), str):
        raise ValueError("do(...) needs action=\"...\"")
    return out


def parse_answer(text: str) -> ParsedAnswer:
    thinking, action_text = split_answer(text)
    try:
        return ParsedAnswer(thinking, action_text, parse_action(action_text))
    except ValueError as e:
        return ParsedAnswer(thinking, action_text, None, str(e))
