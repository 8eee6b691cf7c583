"""The grammar of an AutoGLM-Phone answer (llguidance's Lark syntax), so that decoding can only produce
a reply that `actions.parse_answer` accepts:

    <think>free text</think>\\n<answer>do(action="Tap", element=[500,320])

(the model's `</answer>` is an end-of-generation id; with the grammar, generation simply ends when the
call is complete). The thinking is free text with a token budget, except that it cannot contain an
action marker (`do(action=` / `finish(message=`), because Open-AutoGLM's client and our parser split
the reply at the first one. The answer is exactly one call from the action set in actions.py, with the
arguments in the order the system prompt lists them: coordinates are integers 0..999, strings are
double-quoted with only the escapes \\" \\\\ \\n \\t, a Wait is 0..60 seconds, an app name is not blank.
"""

from __future__ import annotations

# Tokens an answer needs for its arguments beyond the strings (call, action name, coordinates).
_CALL_OVERHEAD_TOKENS = 64
# A Type text, a message or an app name, in characters. A length bound (not a token budget, which
# would cut a string before its closing quote) keeps a rambling model's call finite.
DEFAULT_STRING_CHARS = 300


def answer_grammar(*, max_thinking_tokens: int = 2048, max_string_chars: int = DEFAULT_STRING_CHARS,
                   special_tags: bool = True) -> str:
    """The grammar text. `special_tags`: <think>, </think> and <answer> are single special tokens of the
    vocabulary (as in GLM-4.1V's tokenizer); otherwise they are matched as plain text."""
    if max_thinking_tokens < 1 or max_string_chars < 1:
        raise ValueError("token budgets must be >= 1")

    def tag(name: str) -> str:
        return f"<{name}>" if special_tags else f'"<{name}>"'

    return rf"""
start: {tag("think")} thinking {tag("/think")} "\n"? {tag("answer")} call

thinking[max_tokens={max_thinking_tokens}]: THOUGHT
THOUGHT: /(?s:.*)/ & ~/(?s:.*)(do\(action=|finish\(message=)(?s:.*)/

call: "finish(message=" string ")"
    | "do(action=" action ")"

action: "\"Launch\", app=" app_name
      | "\"Tap\", element=" point (", message=" string)?
      | ("\"Type\", text=" | "\"Type_Name\", text=") string
      | "\"Swipe\", start=" point ", end=" point
      | ("\"Long Press\", element=" | "\"Double Tap\", element=") point
      | "\"Back\"" | "\"Home\"" | "\"Interact\""
      | "\"Wait\"" (", duration=" duration)?
      | ("\"Take_over\"" | "\"Note\"") (", message=" string)?
      | "\"Call_API\"" (", instruction=" string)?

point: "[" COORD "," " "? COORD "]"
COORD: /0|[1-9][0-9]{{0,2}}/
duration: "\"" SECONDS " seconds\""
SECONDS: /[0-9]|[1-5][0-9]|60/

string: /"([^"\\\x00-\x1f]|\\["\\nt]){{0,{max_string_chars}}}"/
app_name: /"[^"\\\x00-\x20]([^"\\\x00-\x1f]|\\["\\nt]){{0,{max_string_chars}}}"/
"""


def thinking_budget(max_tokens: int, max_string_chars: int = DEFAULT_STRING_CHARS) -> int:
    """Thinking tokens that leave room for the longest answer within max_tokens (a call has at most one
    string; a character is at most 4 UTF-8 bytes and a token at least one), so the call is always
    complete in time."""
    return max(1, max_tokens - 4 * max_string_chars - _CALL_OVERHEAD_TOKENS)
