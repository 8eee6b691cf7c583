"""PhoneAgent: screenshot -> AutoGLM's answer -> action on the phone, until the model says finish.

The conversation is Open-AutoGLM's (conversation.py). With the model in this process the session is
kept across steps, so each step evaluates only its new turn (the system prompt and the history come
from the KV cache); the newest screenshot is the only image in the prompt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..actions import Action, parse_answer
from . import conversation as conv
from .backends import LocalModel, ModelBackend
from .device import Device
from .executor import StepOutcome, execute


@dataclass
class StepResult:
    index: int                      # 1-based
    raw: str                        # the model's answer as generated
    thinking: str
    action: Action | None           # None when the answer did not parse (the task then ends, as in Open-AutoGLM)
    outcome: StepOutcome
    screen_size: tuple[int, int]
    timings: dict = field(default_factory=dict)  # screenshot_ms, ttft_ms, prompt/image/generation figures, action_ms
    parse_error: str | None = None


@dataclass
class AgentResult:
    finished: bool                  # the model finished (or the task was stopped on purpose)
    message: str
    steps: list[StepResult]


class PhoneAgent:
    """Drive `device` toward `task` with `model` (an AutoGLM with its mmproj, or a ModelBackend such as
    RemoteModel). grammar: constrain a local model's answers to well-formed actions (answer_grammar.py).
    Callbacks: confirm(message) -> bool for sensitive taps (None: refuse), take_over(message)
    when the user must act (None: stop), on_piece(text) for the streamed answer, on_step(StepResult)."""

    def __init__(self, model, device: Device, *, system_prompt: str, max_steps: int = 100,
                 image_max_pixels: int | None = None, confirm: Callable[[str], bool] | None = None,
                 take_over: Callable[[str], None] | None = None, on_piece: Callable[[str], None] | None = None,
                 on_step: Callable[[StepResult], None] | None = None, sleep: Callable[[float], None] = time.sleep,
                 trace=None, grammar: bool = True):
        self.backend: ModelBackend = (model if hasattr(model, "reply") else
                                      LocalModel(model, image_max_pixels=image_max_pixels, grammar=grammar))
        self.device, self.system_prompt, self.max_steps = device, system_prompt, max_steps
        self.confirm, self.take_over, self.sleep = confirm, take_over, sleep
        self.on_piece = on_piece or (lambda piece: None)
        self.on_step = on_step or (lambda step: None)
        self.trace = trace  # a TraceWriter (trace.py), or None
        self.messages: list[dict] = []
        self.steps: list[StepResult] = []

    def reset(self) -> None:
        self.messages, self.steps = [], []

    def run(self, task: str) -> AgentResult:
        self.reset()
        result = None
        while result is None and len(self.steps) < self.max_steps:
            step = self.step(task if not self.steps else None)
            if step.outcome.finished:
                result = AgentResult(True, step.outcome.message or "done", self.steps)
        result = result or AgentResult(False, f"stopped after {self.max_steps} steps without finishing (--max-steps)",
                                       self.steps)
        if self.trace is not None:
            self.trace.finish(result)
        return result

    def step(self, task: str | None = None) -> StepResult:
        first = not self.messages
        if first and not task:
            raise ValueError("the first step needs the task")
        t0 = time.perf_counter()
        shot = self.device.screenshot()
        app = self.device.current_app()
        t_shot = (time.perf_counter() - t0) * 1e3
        if first:
            self.messages = [{"role": "system", "content": self.system_prompt}, conv.first_turn(shot.png, task, app)]
        else:
            self.messages.append(conv.next_turn(shot.png, app))
        raw, timings = self.backend.reply(self.messages, self.on_piece)
        self.messages[-1] = conv.without_images(self.messages[-1])  # only the newest screenshot is ever sent
        self.messages.append(conv.assistant_turn(raw))
        parsed = parse_answer(raw)
        size = (shot.width, shot.height)
        t1 = time.perf_counter()
        if parsed.parsed is None:
            # Open-AutoGLM ends the task with the unparsed text as its message; say why as well.
            outcome = StepOutcome(True, f"the model's answer has no valid action ({parsed.error}): "
                                        f"{parsed.action_text[:200]}", success=False)
        else:
            outcome = execute(parsed.parsed, self.device, size, confirm=self.confirm, take_over=self.take_over,
                              sleep=self.sleep)
        timings = {"screenshot_ms": t_shot, **timings, "action_ms": (time.perf_counter() - t1) * 1e3}
        step = StepResult(len(self.steps) + 1, raw, parsed.thinking, parsed.parsed, outcome, size, timings,
                          parsed.error)
        self.steps.append(step)
        if self.trace is not None:
            self.trace.add(step, shot.png)
        self.on_step(step)
        return step
