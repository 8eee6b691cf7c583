"""Counters for GET /metrics in Prometheus' text exposition format (a few lines; no client library)."""

from __future__ import annotations

import threading
from collections import defaultdict

HELP = {
    "autoglm_requests_total": "HTTP requests answered, by endpoint and status",
    "autoglm_requests_rejected_total": "requests refused because the queue was full",
    "autoglm_requests_cancelled_total": "requests stopped because the client went away",
    "autoglm_prompt_tokens_total": "prompt tokens (cells) of finished generations",
    "autoglm_prompt_tokens_cached_total": "of those, reused from a slot's cache",
    "autoglm_generated_tokens_total": "tokens generated",
    "autoglm_image_tokens_total": "image tokens in prompts",
    "autoglm_prompt_seconds_total": "time spent evaluating prompts",
    "autoglm_generation_seconds_total": "time spent generating",
    "autoglm_slots": "slots (conversation contexts)",
    "autoglm_slots_busy": "slots working on a request",
    "autoglm_queue_depth": "requests waiting for a slot",
    "autoglm_model_ready": "1 once the model is loaded",
    "autoglm_image_cache_hits": "images found in the embedding cache",
    "autoglm_image_cache_misses": "images encoded by the vision tower",
}


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, tuple], float] = defaultdict(float)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        with self._lock:
            self._counters[(name, tuple(sorted(labels.items())))] += value

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self, gauges: dict[str, float]) -> str:
        with self._lock:
            counters = dict(self._counters)
        lines: list[str] = []
        names = sorted({n for n, _ in counters} | {n for n in HELP if n.endswith("_total")})
        for name in names:
            lines += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} counter"]
            series = [(lab, v) for (n, lab), v in counters.items() if n == name] or [((), 0.0)]
            for lab, v in sorted(series):
                label = ",".join(f'{k}="{val}"' for k, val in lab)
                lines.append(f"{name}{{{label}}} {v:g}" if label else f"{name} {v:g}")
        for name, v in gauges.items():
            lines += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} gauge", f"{name} {v:g}"]
        return "\n".join(lines) + "\n"
