"""Loading images for the vision model: anything a caller may hold -> an 8-bit RGB numpy array.

The pixels then go to the native preprocessing (``_core.preprocess_image``), which reproduces
transformers' ``Glm4vImageProcessorPil`` exactly. What happens here mirrors what that processor (and
a user who opens a file with Pillow) would do before: decode with Pillow, apply the EXIF orientation
(phones store rotated JPEGs), composite transparency onto white (HF ``convert_to_rgb``), expand
grayscale to RGB. The runtime is offline, so http(s) URLs are refused rather than fetched.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import stat
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import ImageError

try:
    from PIL import Image, ImageOps, UnidentifiedImageError
except ImportError as e:  # pragma: no cover - pillow is a dependency
    raise ImportError("autoglm_gguf.images needs Pillow: pip install 'pillow>=10'") from e

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, "Image.Image", np.ndarray]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def load_image(image: Any) -> np.ndarray:
    """Return ``image`` as a C-contiguous ``uint8`` array of shape (height, width, 3).

    Accepted: a path (``str`` or ``os.PathLike``), encoded bytes (``bytes``/``bytearray``/``memoryview``),
    a ``data:image/...;base64,...`` URL, a ``file://`` URL, a ``PIL.Image.Image``, or a ``uint8`` numpy
    array of shape (H, W, 3), (H, W, 4) (RGBA), (H, W, 1) or (H, W) (grayscale).

    Files, bytes and PIL images get their EXIF orientation applied. Transparency (RGBA, LA, PA, or a
    palette/gray image with a transparent colour) is composited onto white with Pillow's
    ``alpha_composite``, for arrays too, so an RGBA array and the same pixels saved as PNG agree.

    Raises :class:`autoglm_gguf.errors.ImageError` for a missing or unreadable file, data that is not
    a decodable image, an empty image, an unsupported type, dtype or shape, and for http(s) URLs.
    """
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if isinstance(image, Image.Image):
        _check_pixels(image.width, image.height, "the PIL image")
        return _from_pil(image, "the PIL image")
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode(bytes(image), f"the {len(image)} bytes given")
    if isinstance(image, str):
        return _from_string(image)
    if isinstance(image, os.PathLike):
        return _from_path(Path(image))
    raise ImageError(
        f"unsupported image type {type(image).__module__}.{type(image).__qualname__}: pass a file path, "
        "encoded bytes, a data: or file:// URL, a PIL.Image.Image, or a uint8 numpy array (H, W), (H, W, 3) "
        "or (H, W, 4)"
    )


def _from_string(s: str) -> np.ndarray:
    if s[:5].lower() == "data:":
        return _decode(_data_url_bytes(s), "the data: URL")
    m = _SCHEME.match(s)
    if m:
        scheme = m.group(1).lower()
        if scheme in ("http", "https"):
            raise ImageError(
                f"not fetching {_short(s)}: the runtime works offline and does not download images; "
                "download it first and pass the file path or its bytes"
            )
        if scheme == "file":
            return _from_path(_file_url_path(s))
        raise ImageError(f"unsupported URL scheme '{scheme}://' in {_short(s)}: pass a file path, bytes, "
                         "a data: URL or a file:// URL")
    return _from_path(Path(s))


def _data_url_bytes(url: str) -> bytes:
    # RFC 2397: data:[<mediatype>][;base64],<data>
    header, sep, payload = url.partition(",")
    if not sep:
        raise ImageError(f"malformed data: URL (no ',' after the header): {_short(url)}")
    params = [p.strip().lower() for p in header[5:].split(";")]
    if "base64" in params:
        try:
            # Whitespace (line-wrapped base64) is dropped first so that validate=True only rejects
            # characters that really are not base64.
            return base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError) as e:
            raise ImageError(f"invalid base64 in data: URL {_short(url)}: {e}") from None
    return urllib.parse.unquote_to_bytes(payload)


def _file_url_path(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise ImageError(f"file:// URL with a remote host '{parsed.netloc}' is not supported: {_short(url)}")
    return Path(urllib.request.url2pathname(parsed.path))


MAX_IMAGE_FILE_BYTES = 256 << 20  # far above any screenshot; a device file or a FIFO is refused before reading
# Our own decode budget, checked from the header before any pixel is decoded: 50 MP is ten times a
# QHD+ phone screenshot. Pillow's bomb guard alone only warns below 179 MP (a 537 MB RGB buffer).
MAX_IMAGE_PIXELS = 50_000_000


def _from_path(path: Path) -> np.ndarray:
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"'{_short(str(path))}' is not a regular file (a device, FIFO or socket); "
                             "pass an image file")
        if st.st_size > MAX_IMAGE_FILE_BYTES:
            raise ImageError(f"image file '{_short(str(path))}' is {st.st_size} bytes, more than the "
                             f"{MAX_IMAGE_FILE_BYTES >> 20} MiB an image file may have")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"image file not found: '{path}'") from None
    except IsADirectoryError:
        raise ImageError(f"image path is a directory, not a file: '{path}'") from None
    except OSError as e:  # permissions, name too long (e.g. base64 passed without its data: prefix), ...
        raise ImageError(f"cannot read image file '{_short(str(path))}': {e.strerror or e}") from None
    return _decode(data, f"'{path}'")


def _decode(data: bytes, what: str) -> np.ndarray:
    if not data:
        raise ImageError(f"{what}: no image data (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
        _check_pixels(im.width, im.height, what)
        im.load()  # decode now, so truncated or corrupt data fails here and not later
    except UnidentifiedImageError:
        raise ImageError(f"{what}: not an image format Pillow can decode ({len(data)} bytes starting "
                         f"with {data[:8]!r})") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{what}: {e}") from None
    except ImageError:
        raise
    except Exception as e:
        raise ImageError(f"{what}: corrupt or truncated image data ({type(e).__name__}: {e})") from None
    return _from_pil(im, what)


def _check_pixels(width: int, height: int, what: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(f"{what}: {width}x{height} is {width * height / 1e6:.0f} MP, more than the "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP this runtime decodes; the model sees at most a few MP "
                         "(image_max_pixels), so send a smaller image")


def _from_pil(im: Image.Image, what: str) -> np.ndarray:
    if im.width == 0 or im.height == 0:
        raise ImageError(f"{what}: empty image ({im.width}x{im.height})")
    try:
        im = ImageOps.exif_transpose(im)  # a no-op copy when there is no Orientation tag
        has_alpha = "A" in im.getbands() or im.info.get("transparency") is not None
        if has_alpha:
            # As transformers' convert_to_rgb: premultiplied-free "over" onto opaque white.
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(white, rgba).convert("RGB")
        elif im.mode != "RGB":
            im = im.convert("RGB")
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    except Exception as e:
        raise ImageError(f"{what}: cannot convert a '{im.mode}' image to RGB "
                         f"({type(e).__name__}: {e})") from None


def _from_array(a: np.ndarray) -> np.ndarray:
    if a.dtype != np.uint8:
        raise ImageError(f"image array must have dtype uint8 (0..255), got {a.dtype}; for floats in [0, 1] "
                         "use (a * 255).round().astype(numpy.uint8)")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ImageError(f"image array must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
                         f"got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError(f"empty image array of shape {a.shape}")
    _check_pixels(a.shape[1], a.shape[0], "the image array")
    if a.ndim == 3 and a.shape[2] == 3:
        return np.ascontiguousarray(a)
    # Pillow infers "L" for (H, W) and "RGBA" for (H, W, 4) uint8 arrays.
    return _from_pil(Image.fromarray(np.ascontiguousarray(a)), "the image array")


def _short(s: str, n: int = 80) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."
