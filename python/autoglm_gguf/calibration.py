"""Calibration conversations for the importance matrix (imatrix.py): reading a JSONL file of them, and
a small built-in set that looks like the agent's real traffic.

File format: one conversation per line, in OpenAI chat-messages form, as Open-AutoGLM sends them:

    {"messages": [{"role": "system", "content": "..."},
                  {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "screens/1.png"}},
                                               {"type": "text", "text": "打开设置\\n\\n{\\"current_app\\": \\"System Home\\"}"}]},
                  {"role": "assistant", "content": "<think>...</think><answer>do(action=\\"Launch\\", app=\\"Settings\\")</answer>"}]}

An image URL is a data: URL, a file:// URL, or a file path (relative paths are relative to the JSONL
file's folder). Text-only lines are fine. Blank lines are skipped.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AutoGLMError


class CalibrationError(AutoGLMError, ValueError):
    """A calibration file (or one of its images) is missing or malformed."""


@dataclass
class Conversation:
    messages: list[dict[str, Any]]   # OpenAI-style; image URLs resolved (absolute paths or data: URLs)
    where: str                       # "calib.jsonl line 3", for messages about it


_HINT = 'each line must be one JSON object {"messages": [{"role": ..., "content": ...}, ...]}'


def load_calibration(path: str | os.PathLike) -> list[Conversation]:
    """The conversations of a JSONL calibration file, checked up front (JSON, message shape, that each
    image file exists) so that a long collection does not stop halfway on a typo."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CalibrationError(f"calibration file {p} does not exist; pass a JSONL file of conversations "
                               "(see `autoglm-gguf imatrix --help`) or use --builtin-calibration") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationError(f"cannot read the calibration file {p}: {e}") from None
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{p} line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CalibrationError(f"{where}: not valid JSON ({e.msg}, column {e.colno}); {_HINT}") from None
        out.append(Conversation(_check_messages(obj, where, p.parent), where))
    if not out:
        raise CalibrationError(f"calibration file {p} has no conversations; {_HINT}")
    return out


def _check_messages(obj: Any, where: str, base: Path) -> list[dict[str, Any]]:
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list) or not obj["messages"]:
        raise CalibrationError(f"{where}: expected a non-empty \"messages\" list; {_HINT}")
    messages = []
    for i, m in enumerate(obj["messages"]):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise CalibrationError(f"{where}: message {i} must be an object with a \"role\" string and \"content\"")
        content = m.get("content")
        if isinstance(content, list):
            content = [_check_part(part, f"{where}: message {i} part {j}", base) for j, part in enumerate(content)]
        elif content is not None and not isinstance(content, str):
            raise CalibrationError(f"{where}: message {i}: content must be a string or a list of parts")
        messages.append({**m, "content": content})
    return messages


def _check_part(part: Any, where: str, base: Path) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return part
    if kind != "image_url":
        raise CalibrationError(f"{where}: unsupported content part {str(part)[:80]!r} "
                               "(expected {\"type\": \"text\"} or {\"type\": \"image_url\"})")
    ref = part.get("image_url")
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str) or not url:
        raise CalibrationError(f"{where}: image_url has no url")
    return {"type": "image_url", "image_url": {"url": _resolve_image(url, where, base)}}


def _resolve_image(url: str, where: str, base: Path) -> str:
    low = url[:8].lower()
    if low.startswith("data:"):
        return url
    if low.startswith(("http://", "https://")):
        raise CalibrationError(f"{where}: remote image {url[:80]} is not downloaded (collection runs offline); "
                               "save it beside the calibration file and give its relative path")
    if low.startswith("file://"):
        from urllib.parse import unquote, urlparse

        path = Path(unquote(urlparse(url).path))
    else:
        path = Path(url)
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise CalibrationError(f"{where}: image file {path} does not exist (relative image paths are read from "
                               f"the calibration file's folder, {base}); fix the path or drop that line")
    return str(path.resolve())


# ------------------------------------------------------------------------------------------ built-in set
# Agent steps: (screen, current app, Chinese task, English task, reply). Replies follow the trained format
# <think>...</think><answer>action</answer>, with Open-AutoGLM's action set.
_STEPS = [
    ("home", "System Home", "打开设置并开启Wi-Fi", "Open Settings and turn on Wi-Fi",
     '<think>当前在桌面，需要先打开设置应用。</think><answer>do(action="Launch", app="设置")</answer>'),
    ("settings", "Settings", None, None,
     '<think>Settings is open. The Wi-Fi switch is off; tap it.</think><answer>do(action="Tap", element=[870,206])</answer>'),
    ("settings_on", "Settings", None, None,
     '<think>Wi-Fi 已经开启，任务完成。</think><answer>finish(message="Wi-Fi 已开启")</answer>'),
    ("home", "System Home", "给妈妈发短信说我晚点到", "Text Mom that I will be late",
     '<think>Open Messages first.</think><answer>do(action="Launch", app="Messages")</answer>'),
    ("messages", "Messages", None, None,
     '<think>找到与妈妈的对话，点击进入。</think><answer>do(action="Tap", element=[500,180])</answer>'),
    ("chat", "Messages", None, None,
     '<think>Type the message into the text field.</think><answer>do(action="Type", text="我晚点到")</answer>'),
    ("home", "System Home", "设置明天早上7点的闹钟", "Set an alarm for 7 am tomorrow",
     '<think>打开时钟应用。</think><answer>do(action="Launch", app="Clock")</answer>'),
    ("clock", "Clock", None, None,
     '<think>Tap the add button at the bottom to create an alarm.</think><answer>do(action="Tap", element=[500,920])</answer>'),
    ("home", "System Home", "查看手机电量", "Check the battery level",
     '<think>电量信息在设置里。</think><answer>do(action="Launch", app="Settings")</answer>'),
    ("settings", "Settings", None, None,
     '<think>Scroll to Battery and open it.</think><answer>do(action="Tap", element=[120,466])</answer>'),
    ("home", "System Home", "在地图上搜索最近的咖啡店", "Find the nearest coffee shop on Maps",
     '<think>Launch Maps.</think><answer>do(action="Launch", app="Maps")</answer>'),
    ("maps", "Maps", None, None,
     '<think>点击搜索框并输入关键词。</think><answer>do(action="Type", text="咖啡店")</answer>'),
]

_LISTS = {
    "messages": ("Messages", ["Mom", "Alice", "Work group", "Delivery 12345", "Bank", "David"]),
    "chat": ("Mom", ["Mom: Are you coming for dinner?", "Me: Yes, around 7", "Mom: OK", "[ Type a message ]"]),
    "clock": ("Alarm", ["06:30  Mon-Fri  off", "08:00  Sat  off", "22:00  Every day  on", "+ Add alarm"]),
    "maps": ("Maps", ["[ Search here ]", "Home", "Work", "Recent: Central Station", "Recent: City Library"]),
}


def _list_screen(title: str, rows: list[str], width: int, height: int):
    from PIL import Image, ImageDraw

    from .agent.screens import _font, _status_bar

    u = max(4, width // 54)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    _status_bar(d, width, u)
    d.text((2 * u, 5 * u), title, fill=(20, 20, 20), font=_font(3 * u))
    for i, row in enumerate(rows):
        y = 11 * u + i * 7 * u
        d.line([2 * u, y + 6 * u, width - 2 * u, y + 6 * u], fill=(225, 225, 225), width=max(1, u // 8))
        d.text((2 * u, y + u), row, fill=(20, 20, 20), font=_font(2 * u))
    return img


def _screen_png(name: str, width: int, height: int) -> bytes:
    from .agent.screens import home_screen, settings_screen

    if name == "home":
        img = home_screen(width, height)
    elif name.startswith("settings"):
        img = settings_screen(width, height, wifi_on=name == "settings_on")
    else:
        img = _list_screen(*_LISTS[name], width, height)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def builtin_calibration(*, width: int = 1080, height: int = 2400, langs: tuple[str, ...] = ("cn", "en"),
                        today: dt.date = dt.date(2025, 1, 6)) -> list[Conversation]:
    """Agent conversations as the served model sees them, in Chinese and English: the system prompt, the
    earlier steps as text (Open-AutoGLM drops old screenshots), the current screenshot with its task or
    screen info, and the answer. Screens are drawn (agent/screens.py), so nothing is downloaded. A few
    dozen conversations: enough for a usable imatrix; real traces (see README) are better."""
    from .agent.conversation import (
        assistant_turn,
        builtin_system_prompt,
        first_turn,
        next_turn,
        without_images,
    )

    pngs: dict[str, bytes] = {}
    out = []
    for lang in langs:
        system = {"role": "system", "content": builtin_system_prompt(lang, today)}
        history: list[dict[str, Any]] = []
        for k, (screen, app, task_cn, task_en, reply) in enumerate(_STEPS):
            if screen not in pngs:
                pngs[screen] = _screen_png(screen, width, height)
            if task_cn:  # a new task starts a new trace
                history = []
                turn = first_turn(pngs[screen], task_cn if lang == "cn" else task_en, app)
            else:
                turn = next_turn(pngs[screen], app)
            answer = assistant_turn(reply)
            out.append(Conversation([system, *history, turn, answer], f"built-in {lang} step {k}"))
            history += [without_images(turn), answer]
    return out


def write_calibration(path: str | os.PathLike, conversations: list[Conversation]) -> Path:
    """Write conversations as a JSONL calibration file, their images as PNG files in `<name>-images/`
    beside it (relative paths), so the set can be read, edited and extended by hand."""
    import base64

    p = Path(path)
    img_dir = p.with_name(p.stem + "-images")
    img_dir.mkdir(parents=True, exist_ok=True)
    seen: dict[str, str] = {}
    lines = []
    for conv in conversations:
        messages = []
        for m in conv.messages:
            content = m.get("content")
            if isinstance(content, list):
                parts = []
                for part in content:
                    url = part.get("image_url", {}).get("url", "") if part.get("type") == "image_url" else ""
                    if url.startswith("data:"):
                        if url not in seen:
                            name = f"{len(seen)}.png"
                            (img_dir / name).write_bytes(base64.b64decode(url.split(",", 1)[1]))
                            seen[url] = f"{img_dir.name}/{name}"
                        part = {"type": "image_url", "image_url": {"url": seen[url]}}
                    parts.append(part)
                content = parts
            messages.append({**m, "content": content})
        lines.append(json.dumps({"messages": messages}, ensure_ascii=False))
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p
