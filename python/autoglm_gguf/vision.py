"""Images in prompts: preprocessing + the vision tower (native), an embeddings cache, and prompt
assembly. An image slot in a raw prompt is `<|begin_of_image|><|image|><|end_of_image|>` (what the
chat template renders); images fill the slots in order. The `<|image|>` token itself is never fed
to the model: its slot becomes the image's embeddings, between the begin/end tokens (spec D.3).
"""

from __future__ import annotations

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
    """The mmproj vision tower plus the core's embeddings cache (by content, bounded by `cache_bytes`;
    the same keys as the C API, so prefix reuse treats an image alike in both)."""

    def __init__(self, mmproj_path: str, *, n_threads: int = 0, use_gpu: bool = True, cache_bytes: int = 256 << 20,
                 matmul_type: str = "file"):
        try:
            self.model = _core.VisionModel(mmproj_path, n_threads=n_threads, use_gpu=use_gpu, matmul_type=matmul_type)
        except _core.NativeError as e:
            from .errors import GGUFFileError

            raise GGUFFileError(str(e)) from None
        self.hparams = self.model.hparams
        self.cache_bytes = cache_bytes
        self._embedder = _core.ImageEmbedder(self.model, cache_bytes)

    @property
    def hits(self) -> int:
        return self._embedder.hits

    @property
    def misses(self) -> int:
        return self._embedder.misses

    def clear_cache(self) -> None:
        self._embedder.clear()

    def encode(self, image, *, min_pixels: int | None = None, max_pixels: int | None = None) -> EncodedImage:
        rgb = load_image(image)
        try:
            emb, rows, cols, key, ms, hit = self._embedder.embed(rgb, int(min_pixels or 0), int(max_pixels or 0))
        except ValueError as e:
            raise ImageError(f"image of {rgb.shape[1]}x{rgb.shape[0]} pixels: {e}") from None
        return EncodedImage(emb, rows, cols, key)


def prompt_pieces(model, prompt: str, images: list[EncodedImage]) -> list:
    """Raw prompt text with image slots + encoded images -> native pieces (token lists, image tuples).
    `model` is the _core.TextModel whose tokenizer splits the text (the core's rule, shared with the C API)."""
    try:
        runs = _core.tokenize_around_images(model, prompt, len(images))
    except ValueError as e:
        raise AutoGLMError(str(e)) from None
    pieces: list = []
    for i, ids in enumerate(runs):
        if ids:
            pieces.append(ids)
        if i < len(images):
            im = images[i]
            pieces.append((im.embeddings, im.grid_h, im.grid_w, im.key))
    return pieces
