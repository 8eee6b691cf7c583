"""What a fuzz case does inside its child process, per kind. Each target returns normally when the input
was accepted and used, or raises; the runner classifies the exception (clean or not).

- gguf-text:   load a mutated text GGUF, then tokenize and generate a few tokens;
- gguf-mmproj: load a mutated mmproj GGUF, then encode a small image;
- image:       decode a malformed image (mutated PNG/JPEG/GIF/WebP bytes, lying headers, bombs) and
               encode it with a good mmproj;
- api:         call the Python API with a misuse drawn from a list (bad sampling values, wrong
               types, empty or oversized prompts, images where none fit, reused streams...).
"""

from __future__ import annotations

import io
import random
import struct
import zlib


# ------------------------------------------------------------------------------------------ targets
def run_text(path: str) -> None:
    from autoglm_gguf import AutoGLM

    llm = AutoGLM(path, n_ctx=128, n_threads=1, progress=False)
    ids = llm.tokenize("Open Settings 打开设置")
    llm.detokenize(ids)
    llm.generate(llm.apply_chat_template([{"role": "user", "content": "hi"}]), max_tokens=3)


def run_mmproj(path: str) -> None:
    import numpy as np

    from autoglm_gguf.vision import ImageEncoder

    enc = ImageEncoder(path, n_threads=1, use_gpu=False)
    enc.encode(np.full((56, 84, 3), 128, dtype=np.uint8))


def run_image(data: bytes, mmproj: str) -> None:
    from autoglm_gguf.images import load_image
    from autoglm_gguf.vision import ImageEncoder

    load_image(data)
    ImageEncoder(mmproj, n_threads=1, use_gpu=False).encode(data, max_pixels=200_000)


# ------------------------------------------------------------------------------------------ images
def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png(width: int, height: int, raw: bytes | None = None, color_type: int = 2, depth: int = 8) -> bytes:
    if raw is None:
        raw = b"".join(b"\0" + bytes(3 * width) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw)) + \
        _png_chunk(b"IEND", b"")


def image_case(rng: random.Random) -> tuple[bytes, str]:
    """Malformed or hostile image bytes, and what they are."""
    from PIL import Image

    def encoded(fmt: str, size=(64, 96)) -> bytes:
        buf = io.BytesIO()
        img = Image.new("RGB", size, (rng.randrange(256), 90, 200))
        img.save(buf, format=fmt)
        return buf.getvalue()

    roll = rng.randrange(9)
    if roll == 0:  # a PNG whose header claims a huge canvas (a decompression bomb by its header)
        w, h = rng.choice([(100_000, 100_000), (2**31 - 1, 1), (1, 2**31 - 1), (65_535, 65_535)])
        return _png(w, h, raw=b"\0" * 64), f"PNG header claims {w}x{h}"
    if roll == 1:  # a real bomb: small file, huge pixel count
        w = h = rng.choice([8_000, 12_000, 20_000])
        raw = zlib.compress(b"\0" * 4096)  # not the full data: the decoder must stop early
        return _png(w, h, raw=raw), f"PNG bomb {w}x{h}"
    if roll == 2:
        return _png(0, rng.randrange(3)), "PNG with a zero dimension"
    if roll == 3:
        return _png(4, 4, color_type=rng.choice([1, 5, 7, 255]), depth=rng.choice([3, 16, 33])), "PNG with an invalid colour type/depth"
    fmt = rng.choice(["PNG", "JPEG", "GIF", "WEBP", "BMP"])
    data = bytearray(encoded(fmt))
    if roll in (4, 5):
        cut = rng.randrange(1, len(data))
        return bytes(data[:cut]), f"{fmt} truncated at {cut} of {len(data)}"
    if roll == 6:
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data), f"{fmt} with random bytes changed"
    if roll == 7:
        return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 8, 100, 5000]))), "random bytes"
    header = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff", "GIF": b"GIF89a", "WEBP": b"RIFF\0\0\0\0WEBP",
              "BMP": b"BM"}[fmt]
    return header + bytes(rng.randrange(256) for _ in range(rng.randrange(4, 200))), f"{fmt} magic then garbage"


# ------------------------------------------------------------------------------------------ API misuse
def _misuses():
    nan, inf = float("nan"), float("inf")
    prompt = "[gMASK]<sop><|user|>\nhi<|assistant|>\n"
    return [
        ("temperature NaN", lambda m: m.generate(prompt, max_tokens=2, temperature=nan)),
        ("temperature -1", lambda m: m.generate(prompt, max_tokens=2, temperature=-1.0)),
        ("top_p 7", lambda m: m.generate(prompt, max_tokens=2, top_p=7.0)),
        ("top_k -5", lambda m: m.generate(prompt, max_tokens=2, top_k=-5)),
        ("min_p inf", lambda m: m.generate(prompt, max_tokens=2, min_p=inf)),
        ("repeat_penalty 0", lambda m: m.generate(prompt, max_tokens=2, repeat_penalty=0.0)),
        ("penalty_last_n -7", lambda m: m.generate(prompt, max_tokens=2, penalty_last_n=-7)),
        ("max_tokens 2^40", lambda m: m.generate(prompt, max_tokens=2**40)),
        ("max_tokens str", lambda m: m.generate(prompt, max_tokens="3")),
        ("prompt None", lambda m: m.generate(None, max_tokens=2)),
        ("prompt empty", lambda m: m.generate("", max_tokens=2)),
        ("prompt over n_ctx", lambda m: m.generate("tap " * 5000, max_tokens=2)),
        ("stop empty string", lambda m: m.generate(prompt, max_tokens=2, stop=[""])),
        ("stop not strings", lambda m: m.generate(prompt, max_tokens=2, stop=[3])),
        ("seed -1", lambda m: m.generate(prompt, max_tokens=2, seed=-1)),
        ("seed 2^70", lambda m: m.generate(prompt, max_tokens=2, seed=2**70)),
        ("images without mmproj", lambda m: m.generate(prompt, max_tokens=2, images=["x.png"])),
        ("image slot without image", lambda m: m.generate("<|begin_of_image|><|image|><|end_of_image|>", max_tokens=2)),
        ("tokenize bytes", lambda m: m.tokenize(b"\xff\xfe")),
        ("detokenize out of range", lambda m: m.detokenize([10**9])),
        ("detokenize negative", lambda m: m.detokenize([-1])),
        ("chat message without role", lambda m: m.create_chat_completion([{"content": "x"}], max_tokens=2)),
        ("chat content int", lambda m: m.create_chat_completion([{"role": "user", "content": 5}], max_tokens=2)),
        ("chat unknown sampling", lambda m: m.create_chat_completion([{"role": "user", "content": "x"}], bogus=1)),
        ("chat remote image", lambda m: m.create_chat_completion(
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}])),
        ("grammar invalid", lambda m: m.generate(prompt, max_tokens=2, grammar="start: nowhere")),
        ("grammar empty", lambda m: m.generate(prompt, max_tokens=2, grammar="")),
        ("stream continued after another generation", _stale_stream),
        ("prompt_logits empty", lambda m: m.prompt_logits("")),
        ("new_context n_ctx 0", lambda m: m.new_context(n_ctx=0)),
        ("new_context n_ctx 2^40", lambda m: m.new_context(n_ctx=2**40)),
        ("progress raises", lambda m: m.generate(prompt, max_tokens=2, progress=_raise_value_error)),
        ("progress returns a string", lambda m: m.generate(prompt, max_tokens=2, progress=lambda a, b: "no")),
    ]


def _raise_value_error(done, total):
    raise ValueError("the progress callback gives up")  # re-raised as itself: a clean error


def _stale_stream(m) -> None:
    prompt = "[gMASK]<sop><|user|>\nhi<|assistant|>\n"
    it = m.generate(prompt, max_tokens=4, stream=True, temperature=1.0, seed=1)
    next(it, None)
    m.generate(prompt + "x", max_tokens=1)
    list(it)


MISUSES = _misuses()


def run_api(index: int, model: str) -> str:
    """Run misuse number `index`; returns its name. The model is loaded in the child."""
    from autoglm_gguf import AutoGLM

    name, call = MISUSES[index % len(MISUSES)]
    llm = AutoGLM(model, n_ctx=256, n_threads=1, progress=False)
    call(llm)
    return name
