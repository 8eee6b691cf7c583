"""The conversation format AutoGLM-Phone was fine-tuned on, as Open-AutoGLM (PyPI `phone-agent`) sends it.
These are protocol facts reproduced by our own code; the tests compare the rendered prompts with what
Open-AutoGLM's own client makes our server render.

- a system message (the agent's instructions, which start with today's date);
- step 1: a user turn [screenshot, "{task}\\n\\n{screen_info}"]; later steps: [screenshot,
  "** Screen Info **\\n\\n{screen_info}"], where screen_info is {"current_app": name} as JSON;
- once a step is answered, its screenshot is dropped from the history (only the newest is sent);
- the answer is kept as "<think>{thinking}</think><answer>{action}</answer>", where Open-AutoGLM's
  client takes as "thinking" everything before the action call (the model's own tags included).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

from ..errors import AutoGLMError

# Open-AutoGLM's client defaults: what the model is served with.
AGENT_SAMPLING = {"temperature": 0.0, "top_p": 0.85, "frequency_penalty": 0.2}
AGENT_MAX_TOKENS = 3000
ACTION_MARKERS = ("finish(message=", "do(action=")  # in the order the client looks for them


def screen_info(current_app: str) -> str:
    return json.dumps({"current_app": current_app}, ensure_ascii=False)


def user_turn(png: bytes, text: str) -> dict:
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                        {"type": "text", "text": text}]}


def first_turn(png: bytes, task: str, current_app: str) -> dict:
    return user_turn(png, f"{task}\n\n{screen_info(current_app)}")


def next_turn(png: bytes, current_app: str) -> dict:
    return user_turn(png, f"** Screen Info **\n\n{screen_info(current_app)}")


def without_images(message: dict) -> dict:
    content = message.get("content")
    if isinstance(content, list):
        return {**message, "content": [p for p in content if p.get("type") == "text"]}
    return message


def split_reply(content: str) -> tuple[str, str]:
    """(thinking, action text) the way Open-AutoGLM's client splits a reply: at the first
    `finish(message=` if there is one anywhere, else at `do(action=`, else the part inside <answer>."""
    for marker in ACTION_MARKERS:
        if marker in content:
            before, after = content.split(marker, 1)
            return before.strip(), marker + after
    if "<answer>" in content:
        before, after = content.split("<answer>", 1)
        return before.replace("<think>", "").replace("</think>", "").strip(), after.replace("</answer>", "").strip()
    return "", content


def assistant_turn(content: str) -> dict:
    thinking, action = split_reply(content)
    return {"role": "assistant", "content": f"<think>{thinking}</think><answer>{action}</answer>"}


# ------------------------------------------------------------------------------------------ system prompt
def openautoglm_system_prompt(lang: str) -> str | None:
    """Open-AutoGLM's own instructions from the installed `phone-agent` package (it needs Python >= 3.12),
    or None when it is not installed. The text is theirs; we do not ship it."""
    try:
        from phone_agent.config import get_system_prompt  # type: ignore[import-not-found]
    except ImportError:
        return None
    return get_system_prompt(lang)


def builtin_system_prompt(lang: str, today: dt.date | None = None) -> str:
    """Our own description of the same action set and rules, for when phone-agent is not installed."""
    d = (today or dt.date.today())
    date = d.strftime("%Y-%m-%d, %A")
    if lang == "cn":
        head = f"今天的日期：{date}\n你是一个操作安卓手机的助手。每一步你会收到当前屏幕截图和屏幕信息，先分析，再给出一个操作。\n"
    else:
        head = f"The current date: {date}\nYou operate an Android phone for the user. Each step you get a screenshot " \
               "and screen info; analyse them, then give exactly one operation.\n"
    return head + """Reply as <think>your reasoning</think><answer>one operation</answer>. Coordinates are on a
0-999 grid over the screen (0,0 top left, 999,999 bottom right). Operations:
do(action="Launch", app="name")            open an app by name
do(action="Tap", element=[x,y])            tap; add message="..." when the tap buys, pays, deletes or sends
do(action="Type", text="...")              type into the focused field (Type_Name for names)
do(action="Swipe", start=[x1,y1], end=[x2,y2])
do(action="Long Press", element=[x,y])     do(action="Double Tap", element=[x,y])
do(action="Back")   do(action="Home")   do(action="Wait", duration="2 seconds")
do(action="Take_over", message="...")      when the user must act (log in, captcha)
do(action="Note", message="...")   do(action="Call_API", instruction="...")   do(action="Interact")
finish(message="...")                      when the task is done, with the answer for the user
Rules: check the current app first and launch the right one; look before you tap; if a page does not
load, wait or go back; never pay or send without the user's consent; finish as soon as the task is done."""


def system_prompt(lang: str, path: str | None = None) -> str:
    """--system-prompt-file, else Open-AutoGLM's installed prompt, else our built-in one."""
    if lang not in ("cn", "en"):
        raise AutoGLMError(f"--lang must be cn or en, got {lang!r}")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise AutoGLMError(f"cannot read the system prompt file {path}: {e.strerror}") from None
    return openautoglm_system_prompt(lang) or builtin_system_prompt(lang)
