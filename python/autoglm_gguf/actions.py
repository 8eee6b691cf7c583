"""AutoGLM's answer format: `<think>reasoning</think><answer>do(action="Tap", element=[500,320])`, or
`finish(message="...")`. Parsed without evaluating anything: the call is read with `ast` and only
literal arguments are accepted.

Two layers, because two users need different things:
- `parse_action` / `parse_answer` give the call as a dict ({"_metadata": "do"|"finish", **kwargs}), the
  form Open-AutoGLM's own client works with and the server's /predict returns;
- `to_action` / `parse` check that dict against the action set AutoGLM-Phone was trained on and give a
  typed `Action` (what the built-in agent executes). Every problem is a ValueError naming the argument.

Coordinates are on the model's 0..999 grid (x to the right, y down); 1000 is accepted as the far edge
and stored as 999, anything outside 0..1000 is refused (it is usually a pixel coordinate).
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

ACTION_CALLS = ("do", "finish")
GRID_MAX = 999
MAX_WAIT_S = 60.0  # a longer Wait is a model error, not a plan; the agent loop would look frozen

#: Action names as the model writes them -> normalized kind. Lookup is case-, space- and
#: underscore-insensitive ("Long Press", "long_press" and "LONG-PRESS" are the same action).
ACTION_KINDS = {
    "Launch": "launch", "Tap": "tap", "Type": "type", "Type_Name": "type", "Swipe": "swipe",
    "Long Press": "long_press", "Double Tap": "double_tap", "Back": "back", "Home": "home",
    "Wait": "wait", "Take_over": "take_over", "Note": "note", "Call_API": "call_api",
    "Interact": "interact",
}

# kind -> (required arguments, optional arguments) besides `action`
_ARGUMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "launch": (("app",), ()), "tap": (("element",), ("message",)), "type": (("text",), ()),
    "swipe": (("start", "end"), ()), "long_press": (("element",), ()), "double_tap": (("element",), ()),
    "back": ((), ()), "home": ((), ()), "wait": ((), ("duration",)), "take_over": ((), ("message",)),
    "note": ((), ("message",)), "call_api": ((), ("instruction",)), "interact": ((), ()),
    "finish": ((), ("message",)),
}

Point = tuple[int, int]


def _name_key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip()).casefold()


_KIND_BY_KEY = {_name_key(name): kind for name, kind in ACTION_KINDS.items()}


@dataclass(frozen=True)
class Action:
    """One validated step. `kind` is normalized ("tap", "long_press", ..., "finish"); `name` is the action
    as the model wrote it ("Type_Name", "Long Press", "finish"). Only the fields of the kind are set."""
    kind: str
    name: str
    point: Point | None = None          # tap, long_press, double_tap
    start: Point | None = None          # swipe
    end: Point | None = None
    text: str | None = None             # type
    app: str | None = None              # launch
    message: str | None = None          # tap (sensitive: ask the user first), take_over, note, finish
    instruction: str | None = None      # call_api
    duration_s: float | None = None     # wait
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the call's dict form

    @property
    def sensitive(self) -> bool:
        """A Tap carrying a message: the model marks taps that pay, buy, delete or send this way."""
        return self.kind == "tap" and self.message is not None

    def to_call(self) -> str:
        """The call text the model would write for this action (parse(a.to_call()) == a)."""
        if self.kind == "finish":
            return "finish()" if self.message is None else f"finish(message={_literal(self.message)})"
        args = [f"action={_literal(self.name)}"]
        for key, value in (("app", self.app), ("element", self.point), ("start", self.start), ("end", self.end),
                           ("text", self.text), ("instruction", self.instruction), ("message", self.message)):
            if value is not None:
                args.append(f"{key}={_literal(list(value) if isinstance(value, tuple) else value)}")
        if self.duration_s is not None:
            seconds = f"{self.duration_s:.6f}".rstrip("0").rstrip(".")
            args.append(f'duration="{seconds} seconds"')
        return f"do({', '.join(args)})"


def _literal(value: Any) -> str:
    # JSON's double-quoted strings, as the model writes them, are valid Python literals too (repr() of
    # a str would pick single quotes).
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class ParsedAnswer:
    thinking: str
    action_text: str                 # the call as the model wrote it, e.g. do(action="Tap", element=[500,320])
    action: dict[str, Any] | None    # {"_metadata": "do"|"finish", **keyword arguments}, or None if invalid
    error: str | None = None
    parsed: Action | None = None     # the same action, typed and validated


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


def _parse_expression(text: str) -> ast.expr:
    try:
        return ast.parse(text, mode="eval").body
    except SyntaxError as first:
        # A string literal spanning lines (Type text with a newline) is not Python; the model means the
        # characters themselves, so retry with control characters escaped.
        escaped = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
        try:
            return ast.parse(escaped, mode="eval").body
        except SyntaxError:
            raise ValueError(f"not a call expression: {first.msg}") from None


def parse_action(action_text: str) -> dict[str, Any]:
    """`do(action="Tap", element=[500, 320])` -> {"_metadata": "do", "action": "Tap", "element": [500, 320]}.
    Only the syntax is checked here (see `to_action`). Raises ValueError naming what is wrong."""
    text = action_text.strip()
    if not text:
        raise ValueError("no action: the answer has no do(...) or finish(...) call")
    node = _parse_expression(text)
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ACTION_CALLS):
        raise ValueError(f"expected do(...) or finish(...), got {action_text[:80]!r}")
    if node.args:
        raise ValueError(f"{node.func.id}(...) takes keyword arguments only")
    out: dict[str, Any] = {"_metadata": node.func.id}
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError("**kwargs are not allowed in an action")
        if kw.arg in out:
            raise ValueError(f"argument {kw.arg!r} is given twice")
        try:
            out[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
            raise ValueError(f"argument {kw.arg!r} is not a literal") from None
    if node.func.id == "do" and not isinstance(out.get("action"), str):
        raise ValueError("do(...) needs action=\"...\"")
    return out


# ------------------------------------------------------------------------------------------ validation
def _point(value: Any, what: str) -> Point:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{what} must be [x, y] on the 0..999 grid, got {value!r}")
    out = []
    for axis, v in zip("xy", value):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{what} {axis} must be a number, got {v!r}")
        if not 0 <= v <= GRID_MAX + 1:
            raise ValueError(f"{what} {axis}={v!r} is outside the 0..999 grid (pixel coordinates?)")
        out.append(min(round(v), GRID_MAX))  # 1000 is the far edge: keep it on screen
    return out[0], out[1]


def _string(value: Any, what: str, *, empty_ok: bool = True) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    if not empty_ok and not value.strip():
        raise ValueError(f"{what} must not be empty")
    return value


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|secs?|seconds?|秒)?\s*$", re.IGNORECASE)


def _duration(value: Any) -> float:
    """"2 seconds", "2s", "1.5", 2 -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"duration must be like \"2 seconds\", got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1))
    else:
        raise ValueError(f"duration must be like \"2 seconds\", got {value!r}")
    if not 0 <= seconds <= MAX_WAIT_S:
        raise ValueError(f"duration {seconds:g} s is outside 0..{MAX_WAIT_S:g} seconds")
    return seconds


def to_action(call: dict[str, Any]) -> Action:
    """Check a call dict (from `parse_action`) against the action set and type its arguments."""
    meta = call.get("_metadata")
    args = {k: v for k, v in call.items() if k not in ("_metadata", "action")}
    if meta == "finish":
        kind, name = "finish", "finish"
    elif meta == "do":
        name = call.get("action")
        if not isinstance(name, str):
            raise ValueError("do(...) needs action=\"...\"")
        kind = _KIND_BY_KEY.get(_name_key(name))
        if kind is None:
            raise ValueError(f"unknown action {name!r}; known: {', '.join(ACTION_KINDS)}")
    else:
        raise ValueError(f"expected a do or finish call, got {meta!r}")
    required, optional = _ARGUMENTS[kind]
    what = name
    missing = [a for a in required if a not in args]
    if missing:
        raise ValueError(f"{what} needs {', '.join(missing)}")
    unexpected = sorted(set(args) - set(required) - set(optional))
    if unexpected:
        allowed = ", ".join(required + optional) or "no arguments"
        raise ValueError(f"{what} does not take {', '.join(unexpected)} (it takes {allowed})")
    fields: dict[str, Any] = {}
    if "element" in args:
        fields["point"] = _point(args["element"], f"{what} element")
    if kind == "swipe":
        fields["start"] = _point(args["start"], f"{what} start")
        fields["end"] = _point(args["end"], f"{what} end")
    if kind == "type":
        fields["text"] = _string(args["text"], f"{what} text")
    if kind == "launch":
        fields["app"] = _string(args["app"], f"{what} app", empty_ok=False).strip()
    if "message" in args:
        fields["message"] = _string(args["message"], f"{what} message")
    if "instruction" in args:
        fields["instruction"] = _string(args["instruction"], f"{what} instruction")
    if kind == "wait":
        fields["duration_s"] = _duration(args.get("duration", 1))  # Open-AutoGLM's default: 1 second
    return Action(kind=kind, name=name, raw=dict(call), **fields)


def parse(action_text: str) -> Action:
    """`do(action="Swipe", start=[500,800], end=[500,200])` -> Action(kind="swipe", ...); accepts a whole
    answer too (the thinking and tags are split off first). Raises ValueError naming what is wrong."""
    _, call = split_answer(action_text)
    return to_action(parse_action(call))


def parse_answer(text: str) -> ParsedAnswer:
    """Thinking, action text, dict form and typed form of a model answer; on any problem `action` is None
    and `error` says what is wrong (a call that parses but is not a valid action counts as a problem)."""
    thinking, action_text = split_answer(text)
    try:
        call = parse_action(action_text)
        return ParsedAnswer(thinking, action_text, call, parsed=to_action(call))
    except ValueError as e:
        return ParsedAnswer(thinking, action_text, None, str(e))
