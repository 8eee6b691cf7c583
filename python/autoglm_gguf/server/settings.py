"""`autoglm-gguf serve`: its settings and command-line flags (named as llama-server names them)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..cli_run import add_offload_args


@dataclass
class ServerSettings:
    model: str
    mmproj: str | None = None            # None: text only; "auto" is resolved by resolve_mmproj()
    alias: str | None = None             # the model id clients send and /v1/models lists
    host: str = "127.0.0.1"
    port: int = 8080
    n_ctx: int = 8192                    # per slot
    n_batch: int = 512
    n_threads: int | None = None
    n_gpu_layers: int = 0
    mmproj_offload: bool = True          # the vision tower on the GPU when there is one
    vision_matmul_type: str = "auto"     # the vision tower's matrices: auto, file, f32, f16, bf16
    parallel: int = 1                    # slots: conversation contexts kept side by side
    max_queue: int = 16                  # requests waiting for a slot beyond those running
    image_max_pixels: int | None = None  # None: the mmproj's own bound
    api_key: str | None = None
    allowed_local_media_path: str | None = None
    keepalive_s: float = 10.0            # SSE comment interval while a stream has nothing to send
    max_body_bytes: int = 64 << 20
    extra: dict = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return self.alias or Path(self.model).name


def resolve_mmproj(model: str, mmproj: str | None) -> str | None:
    """`auto` (the default): the one mmproj-*.gguf beside the model, if there is exactly one."""
    if mmproj not in (None, "auto"):
        return mmproj
    if mmproj is None:
        return None
    from ..cli_run import default_mmproj

    return default_mmproj(model)


def add_serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server (chat completions with images, /predict)",
                       description="Serve the model over an OpenAI-compatible HTTP API on this machine (offline). "
                                   "Open-AutoGLM works unchanged: --base-url http://HOST:PORT/v1. "
                                   "Needs the server extra: pip install 'autoglm-gguf[server]'.")
    s.add_argument("-m", "--model", required=True, help="text model GGUF")
    s.add_argument("--mmproj", default="auto",
                   help="vision projector GGUF, 'auto' (default: the one mmproj-*.gguf beside the model) or 'none'")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("-a", "--alias", help="model name reported by /v1/models (default: the file name)")
    s.add_argument("-c", "--ctx-size", type=int, default=8192, help="context per slot (default 8192)")
    s.add_argument("-b", "--batch-size", type=int, default=512)
    s.add_argument("-t", "--threads", type=int, default=None, help="default: physical cores")
    add_offload_args(s)
    s.add_argument("-np", "--parallel", type=int, default=1,
                   help="slots: conversations whose caches are kept side by side (compute takes turns)")
    s.add_argument("--max-queue", type=int, default=16, help="requests that may wait for a slot (default 16)")
    s.add_argument("--image-max-pixels", type=int, default=None,
                   help="resize bound for images (AutoGLM's serving setting is 5000000)")
    s.add_argument("--api-key", default=os.environ.get("AUTOGLM_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $AUTOGLM_API_KEY, else none)")
    s.add_argument("--allowed-local-media-path", help="allow file:// image URLs under this directory")
    s.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..errors import AutoGLMError

    try:
        from .app import run_server
    except ImportError as e:
        raise AutoGLMError(str(e)) from None

    mmproj = None if str(args.mmproj).lower() == "none" else resolve_mmproj(args.model, args.mmproj)
    settings = ServerSettings(model=args.model, mmproj=mmproj, alias=args.alias, host=args.host, port=args.port,
                              n_ctx=args.ctx_size, n_batch=args.batch_size, n_threads=args.threads,
                              n_gpu_layers=args.gpu_layers, mmproj_offload=args.mmproj_offload,
                              vision_matmul_type=args.vision_matmul_type, parallel=args.parallel, max_queue=args.max_queue,
                              image_max_pixels=args.image_max_pixels, api_key=args.api_key,
                              allowed_local_media_path=args.allowed_local_media_path)
    return run_server(settings)
