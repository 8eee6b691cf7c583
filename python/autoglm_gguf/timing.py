"""Timing the phases of a run through the public API: the one way `autoglm-gguf bench` and
bench/bench_worker.py measure our runtime, so that both report the same figures.

- time_generation: prompt processing and generation tok/s of token ids on a fresh context (greedy, never
  stopping early), as llama-bench's pp/tg tests;
- time_image_encode: pre-processing and the vision tower itself, past the embeddings cache;
- time_first_token: what a user waits for before anything streams (image encoding, prompt, one token).

>>> llm = AutoGLM("AutoGLM-Phone-9B-Q4_0.gguf")
>>> time_generation(llm, llm.tokenize("Hello there"), 32).generation_tokens_per_s
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _core
from .errors import AutoGLMError
from .images import load_image

if TYPE_CHECKING:
    from .model import AutoGLM
    from .vision import ImageEncoder

# Cells beyond prompt + generation in a measuring context: room for nothing else, so the KV cache stays
# the size of the run.
CONTEXT_MARGIN = 16


@dataclass(frozen=True)
class GenerationTiming:
    """The native generator's own counts and rates (AutoGLM.last_timings) of one run."""
    prompt_tokens: int
    prompt_tokens_per_s: float
    generated_tokens: int
    generation_tokens_per_s: float


@dataclass(frozen=True)
class ImageEncodeTiming:
    preprocess_s: float      # resize, normalize, patchify (C++, on the CPU)
    encode_s: float          # the vision tower and merger
    grid_h: int              # patch rows before the 2x2 merge
    grid_w: int              # patch columns before the merge
    embeddings: np.ndarray   # float32 (image tokens, n_embd)

    @property
    def image_tokens(self) -> int:
        return self.embeddings.shape[0]


@dataclass(frozen=True)
class FirstTokenTiming:
    seconds: float           # from the call to the first piece: images, prompt, one sampled token
    prompt_tokens: int
    reused_tokens: int       # prompt tokens the context already held (prefix reuse), not computed
    image_encode_s: float    # 0 without images; near 0 when the embeddings cache had them
    prompt_s: float          # prompt processing of the tokens not reused


def time_generation(llm: AutoGLM, prompt_ids: list[int], n_gen: int) -> GenerationTiming:
    """Process `prompt_ids` and generate `n_gen` tokens greedily in a new context of `llm` (empty KV cache,
    sized to the run), ignoring end-of-generation tokens so every run does the same work. `llm`'s own
    context is left as it was."""
    ctx = llm.new_context(n_ctx=len(prompt_ids) + n_gen + CONTEXT_MARGIN)
    ctx.generate(list(prompt_ids), max_tokens=n_gen, temperature=0.0, ignore_eos=True)
    t = ctx.last_timings or {}
    if t.get("generated_tokens") != n_gen:
        raise AutoGLMError(f"the timed run generated {t.get('generated_tokens')} of {n_gen} tokens")
    return GenerationTiming(t["prompt_tokens"], t["prompt_tokens_per_s"], t["generated_tokens"],
                            t["generation_tokens_per_s"])


def time_image_encode(encoder: ImageEncoder, image: Any, *, min_pixels: int | None = None,
                      max_pixels: int | None = None) -> ImageEncodeTiming:
    """Pre-process one image (resized within min/max_pixels, by default the mmproj's) and run the tower on
    it, bypassing the embeddings cache so every call does the work. Decoding `image` (any source
    load_image takes) is not timed."""
    rgb = load_image(image)
    hp = encoder.hparams
    t0 = time.perf_counter()
    patches, gh, gw = _core.preprocess_image(rgb, hp["image_mean"], hp["image_std"], patch_size=hp["patch_size"],
                                             merge_size=hp["merge_size"],
                                             min_pixels=int(min_pixels or hp["min_pixels"]),
                                             max_pixels=int(max_pixels or hp["max_pixels"]))
    t1 = time.perf_counter()
    emb = encoder.model.encode(patches, gh, gw)
    t2 = time.perf_counter()
    return ImageEncodeTiming(t1 - t0, t2 - t1, gh, gw, emb)


def time_first_token(llm: AutoGLM, prompt: str, **generate_kwargs) -> FirstTokenTiming:
    """Time llm.generate(prompt, max_tokens=1, stream=True, **generate_kwargs) to its first piece (or its
    end, if the one token is not a whole character yet). Runs on `llm`'s context as it is: reset() it
    and clear the image cache first for a cold figure, or keep them to measure prefix reuse."""
    t0 = time.perf_counter()
    stream = llm.generate(prompt, max_tokens=1, stream=True, **generate_kwargs)
    next(stream, None)
    seconds = time.perf_counter() - t0
    for _ in stream:  # finish the run, so last_timings are set
        pass
    t = llm.last_timings or {}
    return FirstTokenTiming(seconds, t.get("prompt_tokens", 0), t.get("prompt_tokens_reused", 0),
                            t.get("image_encode_ms", 0) / 1e3, t.get("prompt_ms", 0) / 1e3)
