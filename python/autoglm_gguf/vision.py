"""Images in prompts: preprocessing + the vision tower (native), an embeddings cache, and prompt
assembly. An image slot in a raw prompt is `<|begin_of_image|><|image|><|end_of_image|>` (what the
chat template renders); images fill the slots in order. The `<|image|>` token itself is never fed
to the model: its slot becomes the image's embeddings, between the begin/end tokens (spec D.3).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from . import _core
from .errors import AutoGLMError, ImageError
from .images import load_image

IMAGE_SLOT = "<|begin_of_image|><|image|><|end_of_image|>"
BEGIN, END = "<|begin_of_image|>", "<|end_of_image|>"


@dataclass
class EncodedImage:
    embeddings: np.ndarray   # float32 [grid_h * grid_w, n_embd] (merged grid, raster order)
    grid_h: int              # merged rows
    grid_w: int              # merged columns
    key: int                 # content hash (prefix reuse, cache)


class ImageEncoder:
    """The mmproj vision tower plus an LRU cache of embeddings bounded by `cache_bytes`."""

    def __init__(self, mmproj_path: str, *, n_threads: int = 0, use_gpu: bool = True, cache_bytes: int = 256 << 20):
        try:
            self.model = _core.VisionModel(mmproj_path, n_threads=n_threads, use_gpu=use_gpu)
        except _core.NativeError as e:
            from .errors import GGUFFileError

            raise GGUFFileError(str(e)) from None
        self.hparams = self.model.hparams
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple, EncodedImage] = OrderedDict()
        self._cached_bytes = 0
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()  # contexts sharing this encoder may call it from several threads

    def clear_cache(self) -> None:
        self._cache.clear()
        self._cached_bytes = 0

    def encode(self, image, *, min_pixels: int | None = None, max_pixels: int | None = None) -> EncodedImage:
        rgb = load_image(image)
        hp = self.hparams
        lo = int(min_pixels or hp["min_pixels"])
        hi = int(max_pixels or hp["max_pixels"])
        digest = hashlib.blake2b(rgb.tobytes(), digest_size=8, person=b"autoglm-img")
        digest.update(np.asarray(rgb.shape, np.int64).tobytes())
        content = int.from_bytes(digest.digest(), "little")
        key = (content, lo, hi)
        with self._lock:  # the tower runs one image at a time anyway
            return self._encode_locked(rgb, key)

    def _encode_locked(self, rgb, key) -> EncodedImage:
        hp = self.hparams
        content, lo, hi = key
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return hit
        self.misses += 1
        try:
            patches, gh, gw = _core.preprocess_image(rgb, hp["image_mean"], hp["image_std"], patch_size=hp["patch_size"],
                                                     merge_size=hp["merge_size"], min_pixels=lo, max_pixels=hi)
        except ValueError as e:
            raise ImageError(f"image of {rgb.shape[1]}x{rgb.shape[0]} pixels: {e}") from None
        emb = self.model.encode(patches, gh, gw)
        m = hp["merge_size"]
        # The key mixes the resize bounds too: the same pixels at another resolution are other tokens.
        enc = EncodedImage(emb, gh // m, gw // m, hash((content, lo, hi)) & ((1 << 63) - 1))
        self._cache[key] = enc
        self._cached_bytes += emb.nbytes
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.embeddings.nbytes
        return enc


def prompt_pieces(tokenize, prompt: str, images: list[EncodedImage]) -> list:
    """Raw prompt text with image slots + encoded images -> native pieces (token lists, image tuples)."""
    parts = prompt.split(IMAGE_SLOT)
    n_slots = len(parts) - 1
    if n_slots != len(images):
        raise AutoGLMError(f"the prompt has {n_slots} image slot(s) ({IMAGE_SLOT}) but {len(images)} image(s) were "
                           "given; they must match (the chat template writes one slot per image part)")
    pieces: list = []
    for i, text in enumerate(parts):
        if i > 0:
            text = END + text
        if i < n_slots:
            text = text + BEGIN
        ids = tokenize(text)
        if ids:
            pieces.append(ids)
        if i < n_slots:
            im = images[i]
            pieces.append((im.embeddings, im.grid_h, im.grid_w, im.key))
    return pieces
