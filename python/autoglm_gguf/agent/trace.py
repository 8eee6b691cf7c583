"""`--trace DIR`: a self-contained HTML report of an agent run, rewritten after every step (so a run that
stops half way still leaves its report): each step's screenshot with the action drawn on it (a ring at a
tap, an arrow for a swipe), the action, its outcome, the model's reasoning and the step's timings."""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path

from PIL import Image, ImageDraw

from .executor import to_pixels

MARK = (255, 32, 96)


def annotate(png: bytes, action, size: tuple[int, int]) -> bytes:
    """The screenshot with `action` drawn where it acts (a PNG)."""
    im = Image.open(io.BytesIO(png)).convert("RGB")
    d = ImageDraw.Draw(im)
    r = max(6, min(im.size) // 30)
    w = max(2, r // 3)
    if action is not None and action.point is not None:
        x, y = to_pixels(action.point, size)
        d.ellipse([x - r, y - r, x + r, y + r], outline=MARK, width=w)
        d.ellipse([x - w, y - w, x + w, y + w], fill=MARK)
    if action is not None and action.start is not None and action.end is not None:
        (x1, y1), (x2, y2) = to_pixels(action.start, size), to_pixels(action.end, size)
        d.line([x1, y1, x2, y2], fill=MARK, width=w)
        # arrow head: two short strokes back from the end, at +-30 degrees
        a = math.atan2(y2 - y1, x2 - x1)
        for da in (math.radians(150), math.radians(-150)):
            d.line([x2, y2, x2 + 2 * r * math.cos(a + da), y2 + 2 * r * math.sin(a + da)], fill=MARK, width=w)
        d.ellipse([x1 - w, y1 - w, x1 + w, y1 + w], fill=MARK)
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def _timings(t: dict) -> str:
    keys = [("screenshot_ms", "screenshot", "ms"), ("image_encode_ms", "image encode", "ms"),
            ("image_tokens", "image tokens", ""), ("prompt_tokens", "prompt tokens", ""),
            ("prompt_tokens_reused", "reused from cache", ""), ("prompt_ms", "prefill", "ms"),
            ("ttft_ms", "first token", "ms"), ("generated_tokens", "generated", "tokens"),
            ("generation_ms", "generation", "ms"), ("grammar_ms", "of which grammar", "ms"),
            ("action_ms", "action", "ms")]
    cells = [f"<tr><td>{label}</td><td>{t[k]:.0f} {unit}</td></tr>" for k, label, unit in keys
             if isinstance(t.get(k), (int, float))]
    return "<table class=t>" + "".join(cells) + "</table>"


class TraceWriter:
    def __init__(self, directory: str | os.PathLike, task: str):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.task = task
        self.sections: list[str] = []
        self.ending = ""

    @property
    def path(self) -> Path:
        return self.dir / "index.html"

    def add(self, step, png: bytes) -> None:
        img = base64.b64encode(annotate(png, step.action, step.screen_size)).decode()
        action = step.action.to_call() if step.action else f"(no valid action: {step.parse_error})"
        self.sections.append(
            f"<section><h2>Step {step.index}</h2><div class=row><img alt='step {step.index} screenshot' "
            f"src='data:image/png;base64,{img}'><div><p class=a>{html.escape(action)}</p>"
            f"<p>{html.escape(step.outcome.message or 'done')}</p><h3>Reasoning</h3>"
            f"<pre>{html.escape(step.thinking)}</pre>{_timings(step.timings)}</div></div></section>")
        self._write()

    def finish(self, result) -> None:
        state = "finished" if result.finished else "stopped"
        self.ending = f"<p class=end>{state} after {len(result.steps)} step(s): {html.escape(result.message)}</p>"
        self._write()

    def _write(self) -> None:
        page = ("<!doctype html><html><head><meta charset='utf-8'><title>autoglm-gguf agent: "
                f"{html.escape(self.task)}</title><style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}"
                ".row{display:flex;gap:2em;align-items:flex-start}img{max-width:360px;border:1px solid #ccc}"
                ".a{font-family:monospace;font-size:1.1em;color:#c02060}pre{white-space:pre-wrap;background:#f6f6f8;"
                "padding:.5em}.t td{padding:0 1em 0 0;color:#555}.end{font-weight:bold}</style></head><body>"
                f"<h1>{html.escape(self.task)}</h1>" + "".join(self.sections) + self.ending + "</body></html>")
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, self.path)  # a reader never sees half a page
