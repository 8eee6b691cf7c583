"""HTTP routes: OpenAI chat/completions (streamed over SSE or not), models, health, tokenize,
metrics, and /predict. Every failure answers in OpenAI's error shape."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from .engine import Engine, Job
from .predict import predict_request, predict_response
from .protocol import (
    APIError,
    bad_request,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    parse_chat,
    parse_completion,
    timings,
    usage,
)
from .settings import ServerSettings

log = logging.getLogger("autoglm_gguf.server")

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
    from sse_starlette import EventSourceResponse, ServerSentEvent
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError(f"the server needs its extra dependencies ({e.name} is missing): "
                      "pip install 'autoglm-gguf[server]'") from None


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def read_json(request: Request, limit: int) -> Any:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise APIError(413, f"the request body is {size} bytes, more than the limit of {limit}", code="body_too_large")
    raw = await request.body()
    if len(raw) > limit:
        raise APIError(413, f"the request body is over the limit of {limit} bytes", code="body_too_large")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad_request(f"the request body is not valid JSON: {e}") from None


def create_app(settings: ServerSettings, engine: Engine | None = None, *, load: bool = True) -> FastAPI:
    engine = engine or Engine(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.loop = asyncio.get_running_loop()
        if load and engine.state == "loading":
            threading.Thread(target=engine.load, name="autoglm-load", daemon=True).start()
        yield
        engine.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="autoglm-gguf", version="0.1.0", lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError):
        engine.metrics.inc("autoglm_requests_total", endpoint=request.url.path, status=str(err.status))
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(APIError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error"))

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if settings.api_key and request.url.path != "/health":
            header = request.headers.get("authorization", "")
            if header != f"Bearer {settings.api_key}":
                return error_response(APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>' "
                                                    "with the key the server was started with",
                                               type="authentication_error", code="invalid_api_key"))
        return await call_next(request)

    def ok(request: Request, body: Any) -> JSONResponse:
        engine.metrics.inc("autoglm_requests_total", endpoint=request.url.path, status="200")
        return JSONResponse(body)

    # -------------------------------------------------------------------------------- info
    @app.get("/health")
    async def health():
        if engine.state == "ready":
            return {"status": "ok"}
        if engine.state == "error":
            return JSONResponse({"status": "error", "error": engine.load_error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "5"})

    @app.get("/v1/models")
    async def models(request: Request):
        return ok(request, {"object": "list", "data": [
            {"id": settings.model_id, "object": "model", "created": int(time.time()), "owned_by": "autoglm-gguf",
             "meta": {"n_ctx": settings.n_ctx, "slots": settings.parallel, "vision": bool(settings.mmproj)}}]})

    @app.get("/slots")
    async def slots(request: Request):
        return ok(request, [s.describe() for s in engine.slots])

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(engine.metrics.render(engine.gauges()), media_type="text/plain; version=0.0.4")

    @app.post("/tokenize")
    async def tokenize(request: Request):
        body = await read_json(request, settings.max_body_bytes)
        text = body.get("content") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise bad_request("'content' must be a string", param="content")
        return ok(request, {"tokens": engine.require_ready().tokenize(text)})

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body = await read_json(request, settings.max_body_bytes)
        ids = body.get("tokens") if isinstance(body, dict) else None
        llm = engine.require_ready()
        n_vocab = llm.n_vocab
        if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < n_vocab
                                                for t in ids):
            raise bad_request(f"'tokens' must be a list of token ids in [0, {n_vocab})", param="tokens")
        return ok(request, {"content": llm.detokenize(ids)})

    # -------------------------------------------------------------------------------- generation
    async def prepared(request: Request, parse) -> Job:
        body = await read_json(request, settings.max_body_bytes)
        if isinstance(body, dict) and body.get("model") is not None and not isinstance(body["model"], str):
            raise bad_request("'model' must be a string", param="model")
        req = parse(body)
        job = await asyncio.to_thread(engine.prepare, req)  # image decoding and tokenizing off the loop
        engine.admit()
        return job

    async def events(job: Job) -> AsyncIterator[tuple]:
        """Acquire a slot, run the job, yield its events; the job is cancelled if the consumer stops."""
        try:
            await engine.acquire(job)
            engine.start(job)
            while True:
                ev = await job.events.get()
                yield ev
                if ev[0] != "piece":
                    return
        finally:
            job.cancel.set()  # no-op after a normal end; stops the worker when the client has gone

    async def collect(request: Request, job: Job) -> tuple[str, str, dict]:
        """Run a non-streamed job to its end; a client that disconnects cancels it."""
        text: list[str] = []
        gen = events(job)
        try:
            while True:
                nxt = asyncio.ensure_future(gen.__anext__())
                while not nxt.done():
                    await asyncio.wait([nxt], timeout=0.5)
                    if not nxt.done() and await request.is_disconnected():
                        nxt.cancel()
                        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                            await nxt
                        raise APIError(499, "the client closed the request", type="cancelled")
                ev = nxt.result()
                if ev[0] == "piece":
                    text.append(ev[1])
                elif ev[0] == "error":
                    raise ev[1]
                else:
                    return "".join(text), ev[1], ev[2]
        finally:
            await gen.aclose()

    def stream(job: Job, make_chunk, finish_extra) -> EventSourceResponse:
        async def sse():
            try:
                first = make_chunk(None, None, first=True)
                if first is not None:
                    yield {"data": json.dumps(first)}
                async for ev in events(job):
                    if ev[0] == "piece":
                        yield {"data": json.dumps(make_chunk(ev[1], None))}
                    elif ev[0] == "error":
                        yield {"data": json.dumps(ev[1].body())}
                    else:
                        yield {"data": json.dumps({**make_chunk(None, ev[1]), **finish_extra(ev[2])})}
                        if job.req.include_usage:
                            yield {"data": json.dumps({**make_chunk(None, None, usage_only=True),
                                                       "usage": usage(ev[2])})}
            except APIError as err:  # e.g. the queue filled up between admission and this point
                yield {"data": json.dumps(err.body())}
            finally:
                job.cancel.set()  # however the stream ends (disconnect included), the worker stops
            yield {"data": "[DONE]"}

        return EventSourceResponse(sse(), ping=settings.keepalive_s,
                                   ping_message_factory=lambda: ServerSentEvent(comment="keep-alive"),
                                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def generation(request: Request, parse, id_prefix: str, chunk, response):
        job = await prepared(request, parse)
        base = {"id": f"{id_prefix}-{uuid.uuid4().hex}", "created": int(time.time()), "model": settings.model_id,
                "system_fingerprint": "autoglm-gguf"}
        engine.metrics.inc("autoglm_requests_total", endpoint=request.url.path, status="200")
        if job.req.stream:
            return stream(job, lambda *a, **k: chunk(base, *a, **k), lambda t: {"timings": timings(t)})
        text, finish, t = await collect(request, job)
        return JSONResponse({**response(base, text, finish), "usage": usage(t), "timings": timings(t)})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await generation(request, parse_chat, "chatcmpl", chat_chunk, chat_response)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await generation(request, parse_completion, "cmpl", completion_chunk, completion_response)

    @app.post("/predict")
    async def predict(request: Request):
        body = await read_json(request, settings.max_body_bytes)
        job = await asyncio.to_thread(engine.prepare, predict_request(body))
        engine.admit()
        text, finish, t = await collect(request, job)
        return ok(request, predict_response(text, finish, t))

    return app


def run_server(settings: ServerSettings) -> int:
    import uvicorn

    from ..errors import AutoGLMError

    if settings.parallel < 1:
        raise AutoGLMError(f"--parallel must be >= 1, got {settings.parallel}")
    if settings.max_queue < 0:
        raise AutoGLMError(f"--max-queue must be >= 0, got {settings.max_queue}")
    from pathlib import Path

    if not Path(settings.model).is_file():
        raise AutoGLMError(f"{settings.model}: no such model file")
    if settings.mmproj and not Path(settings.mmproj).is_file():
        raise AutoGLMError(f"{settings.mmproj}: no such mmproj file")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    print(f"autoglm-gguf serve: http://{settings.host}:{settings.port}/v1 (model id {settings.model_id!r}); "
          "loading the model...", flush=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=5)
    return 0
