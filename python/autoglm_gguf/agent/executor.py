"""Carry out one parsed action on a device.

Grid coordinates (0..999) become pixels the way Open-AutoGLM computes them, int(v / 1000 * size), so the
same answer taps the same pixel with either agent. The executor never waits for a person unless it was
given a callback to do so: without `confirm`, a sensitive tap is refused; without `take_over`, a request
for the user ends the task with a message saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..actions import GRID_MAX, Action, Point
from .apps import UnknownAppError
from .device import Device

LONG_PRESS_MS = 3000                       # Open-AutoGLM's hold time
SWIPE_MS_MIN, SWIPE_MS_MAX = 1000, 2000    # its swipe durations, longer for longer swipes


@dataclass(frozen=True)
class StepOutcome:
    finished: bool                # the task is over (finish, a refusal, or the user is needed)
    message: str | None = None    # for the user: the finish message, or what happened instead of the action
    success: bool = True          # False when the action was not performed


def to_pixels(point: Point, screen_size: tuple[int, int]) -> tuple[int, int]:
    """Grid point -> pixel, clamped to the grid and to the screen."""
    width, height = screen_size
    gx, gy = (min(max(int(v), 0), GRID_MAX) for v in point)
    x, y = int(gx / 1000 * width), int(gy / 1000 * height)
    return min(max(x, 0), width - 1), min(max(y, 0), height - 1)


def swipe_ms(x1: int, y1: int, x2: int, y2: int) -> int:
    """Open-AutoGLM's swipe duration: the squared pixel distance / 1000, kept within 1..2 s."""
    return max(SWIPE_MS_MIN, min(int(((x1 - x2) ** 2 + (y1 - y2) ** 2) / 1000), SWIPE_MS_MAX))


def execute(action: Action, device: Device, screen_size: tuple[int, int], *,
            confirm: Callable[[str], bool] | None = None, take_over: Callable[[str], None] | None = None,
            sleep: Callable[[float], None] = time.sleep, apps: Mapping[str, str] | None = None) -> StepOutcome:
    """Perform `action` on `device`, whose screen is `screen_size` (width, height) pixels.

    confirm(message) is asked before a sensitive tap (True: tap); take_over(message) returns once the
    user has done what the model asked (log in, solve a captcha). `sleep` serves Wait; `apps` adds
    app names for Launch. Device problems raise DeviceError."""
    kind = action.kind
    if kind == "finish":
        return StepOutcome(True, action.message)
    if kind == "tap":
        if action.sensitive:
            if confirm is None:
                return StepOutcome(True, f"refused a sensitive action with no one to confirm it "
                                         f"({action.message}); give a confirm callback to allow it", False)
            if not confirm(action.message or ""):
                return StepOutcome(True, f"the user refused the sensitive action: {action.message}", False)
        device.tap(*to_pixels(_need(action.point, action), screen_size))
    elif kind == "double_tap":
        device.double_tap(*to_pixels(_need(action.point, action), screen_size))
    elif kind == "long_press":
        device.long_press(*to_pixels(_need(action.point, action), screen_size), LONG_PRESS_MS)
    elif kind == "swipe":
        x1, y1 = to_pixels(_need(action.start, action), screen_size)
        x2, y2 = to_pixels(_need(action.end, action), screen_size)
        device.swipe(x1, y1, x2, y2, swipe_ms(x1, y1, x2, y2))
    elif kind == "type":
        device.type_text(action.text or "")
    elif kind == "back":
        device.back()
    elif kind == "home":
        device.home()
    elif kind == "launch":
        try:
            package = device.package_for(_need(action.app, action), apps)
        except UnknownAppError as e:
            # Not fatal: the model can open the app another way (from the home screen).
            return StepOutcome(False, str(e), False)
        device.launch(package)
    elif kind == "wait":
        sleep(action.duration_s if action.duration_s is not None else 1.0)
    elif kind == "take_over":
        message = action.message or "the model asks you to take over"
        if take_over is None:
            return StepOutcome(True, f"the user is needed: {message}", False)
        take_over(message)
    elif kind == "interact":
        # The model wants the user to choose; Open-AutoGLM goes on, and so do we.
        return StepOutcome(False, "the model asks the user to choose (Interact)")
    elif kind == "note":
        return StepOutcome(False, action.message)
    elif kind == "call_api":
        return StepOutcome(False, action.instruction)
    else:
        raise ValueError(f"unknown action kind {kind!r}")
    return StepOutcome(False)


def _need(value, action: Action):
    # Actions built by hand (not by the parser) may lack a field; say which instead of a TypeError.
    if value is None:
        raise ValueError(f"{action.name} action is missing its argument: {action!r}")
    return value
