"""The serving engine: one loaded model, `parallel` slots (each its own conversation context and KV
cache over the shared weights), a bounded FIFO queue in front of them, and generation in worker
threads.

Compute takes turns: the core runs one micro-batch at a time on the model (prompt chunks and
decode steps of different slots interleave), so slots buy prefix reuse for several conversations
at once, not parallel speed. Slot bookkeeping lives on the event loop's thread; workers report back
through `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import _core
from ..errors import AutoGLMError, ContextFullError, ImageError
from ..images import load_image
from ..model import AutoGLM, _message_parts
from ..vision import IMAGE_SLOT
from .metrics import Metrics
from .protocol import APIError, GenerationRequest, bad_request
from .settings import ServerSettings

log = logging.getLogger("autoglm_gguf.server")


class Cancelled(Exception):
    """The client went away: raised from the prompt-progress callback to stop a prefill."""


@dataclass
class Job:
    req: GenerationRequest
    prompt: str                                  # rendered raw prompt (image slots included)
    images: list[np.ndarray]
    segments: list                               # text and image-hash segments, for slot choice
    n_prompt: int                                # cells the prompt will take in the cache
    cancel: threading.Event = field(default_factory=threading.Event)
    events: asyncio.Queue | None = None
    slot: Slot | None = None
    started: float = field(default_factory=time.monotonic)
    progress: tuple[int, int] = (0, 0)           # prompt cells evaluated / to evaluate (not reused)
    n_pieces: int = 0                            # text pieces streamed so far


@dataclass
class Slot:
    index: int
    ctx: AutoGLM
    busy: bool = False
    segments: list = field(default_factory=list)  # what its cache holds, roughly (see match_score)
    last_used: float = 0.0
    job: Job | None = None
    n_cached: int = 0                              # cells in its cache after the last job

    def describe(self) -> dict:
        j = self.job if self.busy else None
        return {"id": self.index, "busy": self.busy, "n_ctx": self.ctx.n_ctx, "n_cached": self.n_cached,
                "prompt_progress": list(j.progress) if j else None, "n_pieces": j.n_pieces if j else None}


def _weight(seg) -> int:
    # Text counts by characters; an image by its tokens at ~4 characters a token (what text of the same
    # cost would weigh).
    return len(seg) if isinstance(seg, str) else 4 * seg[1]


def match_score(held: list, wanted: list) -> int:
    """What choosing a slot is worth for a request: the part of the request its cache already holds,
    minus the part of its cache the request would throw away (another conversation's context). Segments
    are text and (image key, tokens) pairs. Only steers slot choice; the core decides reuse."""
    matched = 0
    for a, b in zip(held, wanted):
        if isinstance(a, str) and isinstance(b, str):
            n = len(os.path.commonprefix([a, b]))
            matched += n
            if n < len(b) or n < len(a):
                break
        elif a == b:
            matched += _weight(a)
        else:
            break
    return matched - (sum(_weight(x) for x in held) - matched)


class Engine:
    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.state = "loading"
        self.load_error: str | None = None
        self.llm: AutoGLM | None = None
        self.slots: list[Slot] = []
        self.waiting: list[tuple[Job, asyncio.Future]] = []
        self.metrics = Metrics()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pool = ThreadPoolExecutor(max_workers=max(1, settings.parallel), thread_name_prefix="autoglm-slot")
        self.media_root = (Path(settings.allowed_local_media_path).resolve()
                           if settings.allowed_local_media_path else None)

    # ------------------------------------------------------------------------------------ loading
    def load(self) -> None:
        """Load the model and make the slots (runs in a thread; /health answers 503 until done)."""
        s = self.settings
        try:
            llm = AutoGLM(s.model, mmproj_path=s.mmproj, n_ctx=s.n_ctx, n_batch=s.n_batch, n_threads=s.n_threads,
                          n_gpu_layers=s.n_gpu_layers, mmproj_offload=s.mmproj_offload, progress=None,
                          vision_matmul_type=s.vision_matmul_type)
            slots = [Slot(0, llm)] + [Slot(i, llm.new_context()) for i in range(1, s.parallel)]
        except Exception as e:  # reported by /health and the log; the process keeps answering
            self.load_error = f"{type(e).__name__}: {e}"
            self.state = "error"
            log.error("cannot load the model: %s", self.load_error)
            return
        self.llm, self.slots = llm, slots
        self.state = "ready"
        log.info("placement: %s", llm.placement_summary())
        log.info("model %s ready: %d slot(s) of %d tokens%s", s.model_id, s.parallel, s.n_ctx,
                 ", images on" if s.mmproj else ", text only (no mmproj)")

    def require_ready(self) -> AutoGLM:
        if self.state == "loading":
            raise APIError(503, "the model is still loading; retry shortly (GET /health says when it is ready)",
                           type="server_error", code="model_loading", headers={"Retry-After": "5"})
        if self.state == "error":
            raise APIError(503, f"the model failed to load: {self.load_error}", type="server_error",
                           code="model_load_failed")
        assert self.llm is not None
        return self.llm

    # ------------------------------------------------------------------------------------ requests
    def _image(self, where: str, src: Any) -> tuple[np.ndarray, str]:
        """An image part's source -> pixels, and a content key. Only data: URLs, and file:// URLs under
        --allowed-local-media-path: nothing is fetched, nothing else on this machine is read."""
        if not isinstance(src, str):
            raise bad_request(f"{where}: the image must be given as a data: URL", param=where)
        if src.startswith(("http://", "https://")):
            raise bad_request(f"{where}: remote image URLs are not fetched (this server is offline); send the image "
                              "inline as a data:image/png;base64,... URL", param=where)
        if src.startswith("file://"):
            if self.media_root is None:
                raise bad_request(f"{where}: file:// URLs are refused unless the server is started with "
                                  "--allowed-local-media-path DIR", param=where)
            path = Path(src[len("file://"):]).resolve()
            if not path.is_relative_to(self.media_root):
                raise bad_request(f"{where}: {path} is outside the allowed media directory {self.media_root}",
                                  param=where)
            try:
                st = path.stat()
            except OSError as e:
                raise bad_request(f"{where}: cannot read {path}: {e.strerror}", param=where) from None
            if not stat.S_ISREG(st.st_mode) or st.st_size > self.settings.max_body_bytes:
                raise bad_request(f"{where}: {path} is not a regular image file of at most "
                                  f"{self.settings.max_body_bytes} bytes", param=where)
        elif not src.startswith("data:"):
            raise bad_request(f"{where}: unsupported image URL {src[:40]!r}; send a data:image/...;base64,... URL",
                              param=where)
        try:
            rgb = load_image(src)
        except ImageError as e:
            raise bad_request(f"{where}: {e}", param=where, code="invalid_image") from None
        key = hashlib.blake2b(src.encode(), digest_size=12).hexdigest()
        return rgb, key

    def _image_tokens(self, rgb: np.ndarray, max_pixels: int | None) -> int:
        hp = self.llm.vision.hparams
        p, m = hp["patch_size"], hp["merge_size"]
        hi = int(max_pixels or hp["max_pixels"])
        h, w = _core.smart_resize(rgb.shape[0], rgb.shape[1], patch_size=p, merge_size=m,
                                  min_pixels=int(hp["min_pixels"]), max_pixels=hi)
        return (h // (p * m)) * (w // (p * m))

    def prepare(self, req: GenerationRequest) -> Job:
        """Render and check a request before anything is sent back: bad images, a prompt longer than a
        slot's context and the like become 4xx answers here, not errors in the middle of a stream."""
        llm = self.require_ready()
        if req.image_max_pixels is None:
            req.image_max_pixels = self.settings.image_max_pixels
        images: list[np.ndarray] = []
        segments: list = []
        if req.messages is not None:
            sources: list = []
            rendered = []
            for i, m in enumerate(req.messages):
                before = len(sources)
                try:
                    rendered.append(_message_parts(i, m, sources)[0])
                except (ValueError, AutoGLMError) as e:
                    raise bad_request(str(e), param=f"messages[{i}]") from None
                parts = [j for j, p in enumerate(m["content"])
                         if isinstance(p, dict) and p.get("type") == "image_url"] if isinstance(m.get("content"), list) else []
                for k, src in enumerate(sources[before:]):
                    where = f"messages[{i}].content[{parts[k] if k < len(parts) else k}]"
                    if llm.vision is None:
                        raise bad_request(f"{where}: this server has no vision projector (start it with --mmproj) so "
                                          "it cannot read images", param=where)
                    rgb, key = self._image(where, src)
                    images.append(rgb)
                    segments.append(key)
            prompt = _core.format_chat(rendered, True)
        else:
            prompt = req.prompt
            if IMAGE_SLOT in prompt:
                raise bad_request("raw prompts cannot carry images; use /v1/chat/completions", param="prompt")
        n_image_each = [self._image_tokens(im, req.image_max_pixels) for im in images]
        texts = prompt.split(IMAGE_SLOT)
        keys, segments = segments, []
        for i, t in enumerate(texts):
            segments.append(t)
            if i < len(keys):
                segments.append((keys[i], n_image_each[i]))
        n_image = sum(n_image_each)
        n_prompt = len(llm.tokenize(prompt)) - len(images) + n_image
        if n_prompt > self.settings.n_ctx:
            raise bad_request(f"the prompt takes {n_prompt} tokens ({n_image} of them for {len(images)} image(s)), more "
                              f"than a slot's context of {self.settings.n_ctx}; start the server with a larger -c, or "
                              "send smaller images (image_max_pixels)", param="messages",
                              code="context_length_exceeded")
        return Job(req=req, prompt=prompt, images=images, segments=segments, n_prompt=n_prompt)

    # ------------------------------------------------------------------------------------ slots
    def admit(self) -> None:
        """Refuse at once, before a stream starts, when the queue is full."""
        self.require_ready()
        if not any(not s.busy for s in self.slots) and len(self.waiting) >= self.settings.max_queue:
            self.metrics.inc("autoglm_requests_rejected_total")
            raise APIError(503, f"the server is busy: {len(self.slots)} slot(s) working and {len(self.waiting)} "
                                f"request(s) queued (--max-queue {self.settings.max_queue}); retry later",
                           type="server_error", code="queue_full", headers={"Retry-After": "10"})

    def _pick(self, job: Job) -> Slot | None:
        free = [s for s in self.slots if not s.busy]
        if not free:
            return None
        return max(free, key=lambda s: (match_score(s.segments, job.segments), -s.last_used))

    async def acquire(self, job: Job) -> Slot:
        self.require_ready()  # admission (queue bound) was decided by admit() before the response started
        slot = self._pick(job) if not self.waiting else None
        if slot is None:
            fut = asyncio.get_running_loop().create_future()
            self.waiting.append((job, fut))
            try:
                slot = await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._release(fut.result())  # granted just as the client left: hand it on
                self.waiting = [(j, f) for j, f in self.waiting if f is not fut]
                raise
        slot.busy = True
        job.slot, slot.job = slot, job
        return slot

    def _release(self, slot: Slot) -> None:
        slot.busy = False
        slot.last_used = time.monotonic()
        while self.waiting:
            job, fut = self.waiting.pop(0)
            if not fut.done():
                slot.busy = True
                fut.set_result(slot)
                return

    # ------------------------------------------------------------------------------------ running
    def start(self, job: Job) -> None:
        """Run `job` on its slot in a worker thread; events go to job.events:
        ("piece", str), then ("done", finish_reason, timings) or ("error", APIError)."""
        loop = asyncio.get_running_loop()
        job.events = asyncio.Queue()

        def emit(*event):
            loop.call_soon_threadsafe(job.events.put_nowait, event)

        def finished():
            self._release(job.slot)

        def work():
            try:
                self._generate(job, emit)
            finally:
                loop.call_soon_threadsafe(finished)

        self.pool.submit(work)

    def _generate(self, job: Job, emit) -> None:
        ctx, req = job.slot.ctx, job.req

        def progress(done: int, total: int) -> None:
            job.progress = (done, total)
            if job.cancel.is_set():
                raise Cancelled()

        text: list[str] = []
        try:
            pieces = ctx._pieces(job.prompt, max_tokens=-1 if req.max_tokens is None else req.max_tokens,
                                 stop=req.stop, seed=req.seed, sampling=req.sampling.native(), images=job.images,
                                 pixels=(req.image_max_pixels, None), progress=progress,
                                 stop_at_eog=not req.ignore_eos, grammar=req.grammar)
            try:
                for piece in pieces:
                    if job.cancel.is_set():
                        break
                    text.append(piece)
                    job.n_pieces += 1
                    emit("piece", piece)
            finally:
                pieces.close()
            if job.cancel.is_set():
                raise Cancelled()
            t = dict(ctx.last_timings or {})
            self._account(t)
            emit("done", ctx.last_finish_reason or "stop", t)
        except Cancelled:
            self.metrics.inc("autoglm_requests_cancelled_total")
            log.info("slot %d: request cancelled by the client after %.1f s", job.slot.index,
                     time.monotonic() - job.started)
            emit("error", APIError(499, "the client closed the request", type="cancelled"))
        except ContextFullError as e:
            emit("error", bad_request(str(e), code="context_length_exceeded"))
        except (ImageError, ValueError) as e:
            emit("error", bad_request(str(e)))
        except Exception as e:  # a bug or a backend failure: report it, keep serving
            log.exception("slot %d: generation failed", job.slot.index)
            emit("error", APIError(500, f"generation failed: {type(e).__name__}: {e}", type="server_error"))
        finally:
            job.slot.segments = job.segments[:-1] + [job.segments[-1] + "".join(text)] if job.segments else []
            job.slot.n_cached = ctx.n_past

    def _account(self, t: dict) -> None:
        m = self.metrics
        m.inc("autoglm_prompt_tokens_total", t.get("prompt_tokens", 0))
        m.inc("autoglm_prompt_tokens_cached_total", t.get("prompt_tokens_reused", 0))
        m.inc("autoglm_generated_tokens_total", t.get("generated_tokens", 0))
        m.inc("autoglm_image_tokens_total", t.get("image_tokens", 0))
        m.inc("autoglm_prompt_seconds_total", t.get("prompt_ms", 0.0) / 1e3)
        m.inc("autoglm_generation_seconds_total", t.get("generation_ms", 0.0) / 1e3)

    def gauges(self) -> dict[str, float]:
        enc = self.llm.vision if self.llm is not None else None
        return {"autoglm_slots": len(self.slots), "autoglm_slots_busy": sum(s.busy for s in self.slots),
                "autoglm_queue_depth": len(self.waiting), "autoglm_model_ready": float(self.state == "ready"),
                "autoglm_image_cache_hits": enc.hits if enc else 0, "autoglm_image_cache_misses": enc.misses if enc else 0}
