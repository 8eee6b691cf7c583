"""Image preprocessing (native/src/image.cpp) against transformers' Glm4vImageProcessorPil and Pillow,
and autoglm_gguf.images.load_image.

The native code is meant to be bit-identical to HF's PIL processor (smart_resize arithmetic, Pillow's
BICUBIC, float32 normalization); the measured differences are printed (pytest -s) and asserted.
"""

from __future__ import annotations

import base64
import io
import platform

import numpy as np
import pytest

from autoglm_gguf import ImageError, _core
from autoglm_gguf.errors import AutoGLMError
from autoglm_gguf.images import load_image

PIL_Image = pytest.importorskip("PIL.Image")
hf_pil = pytest.importorskip("transformers.models.glm4v.image_processing_pil_glm4v")

BICUBIC = PIL_Image.Resampling.BICUBIC
X86 = platform.machine().lower() in ("x86_64", "amd64")
GLM_DEFAULT = dict(min_pixels=12544, max_pixels=9633792)  # GLM-4.1V preprocessor_config
AUTOGLM_SERVING = dict(min_pixels=12544, max_pixels=5_000_000)  # AutoGLM's --max-pixels
HF_CLASS_DEFAULT = dict(min_pixels=112 * 112, max_pixels=28 * 28 * 15000)


def hf_smart_resize(h, w, patch=14, merge=2, temporal=2, min_pixels=12544, max_pixels=9633792):
    # How Glm4vImageProcessorPil.resize calls it: a still image counts as temporal_patch_size frames.
    return hf_pil.smart_resize(num_frames=temporal, height=h, width=w, temporal_factor=temporal,
                               factor=patch * merge, min_pixels=min_pixels, max_pixels=max_pixels)


def rand_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth_image(h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127.5 + 127.5 * np.sin(x / max(w, 1) * 7 + y / max(h, 1) * 3)
    g = 255 * x / max(w - 1, 1)
    b = 255 * ((x + y) % 37 < 18)  # hard edges: over/undershoot exercises clipping
    return np.stack([r, g, b], -1).round().astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# smart_resize

# (height, width); both orientations are checked
SIZE_TABLE = [(2400, 1080), (700, 1078), (100, 100), (27, 300), (4000, 3000), (6000, 4000), (2200, 1700),
              (28, 28), (29, 5000), (1, 200), (3, 7), (14, 14), (56, 112), (84, 84), (3200, 1440), (1, 1),
              (448, 448), (20000, 19000), (13, 2600), (41, 41), (42, 42), (70, 98)]


@pytest.mark.parametrize("budget", [GLM_DEFAULT, AUTOGLM_SERVING, HF_CLASS_DEFAULT],
                         ids=["glm", "autoglm5M", "hfclass"])
def test_smart_resize_table(budget):
    for h, w in SIZE_TABLE:
        for hh, ww in ((h, w), (w, h)):
            assert _core.smart_resize(hh, ww, **budget) == hf_smart_resize(hh, ww, **budget), (hh, ww)


def test_smart_resize_sweep():
    # Every small size (the upscale, round-half-even and min-budget branches), and random large ones.
    rng = np.random.default_rng(1)
    cases = [(h, w) for h in range(1, 90) for w in range(1, 90) if max(h, w) / min(h, w) <= 20]
    cases += [tuple(int(v) for v in rng.integers(1, 9000, 2)) for _ in range(3000)]
    cases += [(int(h), int(h * 200 // 1)) for h in rng.integers(1, 60, 50)]  # near the ratio limit
    n = 0
    for budget in (GLM_DEFAULT, AUTOGLM_SERVING, dict(min_pixels=200_000, max_pixels=400_000)):
        for patch, merge in ((14, 2), (16, 2), (14, 1)):
            for h, w in cases:
                try:
                    want = hf_smart_resize(h, w, patch, merge, **budget)
                except ValueError:
                    with pytest.raises(ValueError):
                        _core.smart_resize(h, w, patch, merge, 2, **budget)
                    continue
                got = _core.smart_resize(h, w, patch, merge, 2, **budget)
                assert got == want, (h, w, patch, merge, budget)
                n += 1
    assert n > 30000


def test_smart_resize_spec_values():
    # spec C.1 / C.5 check values (input given as width x height there)
    assert _core.smart_resize(2400, 1080) == (2408, 1092)
    assert _core.smart_resize(2400, 1080, max_pixels=5_000_000) == (2352, 1036)
    assert _core.smart_resize(4000, 6000) == (128 * 14, 192 * 14)
    assert _core.smart_resize(3000, 4000) == (134 * 14, 180 * 14)
    assert _core.smart_resize(2200, 1700) == (158 * 14, 122 * 14)
    assert _core.smart_resize(100, 100) == (112, 112)
    assert _core.smart_resize(700, 1078) == (700, 1064)  # 38.5 rounds to 38 (half to even)
    assert _core.smart_resize(56, 112, min_pixels=12544) == (56, 112)  # 2 frames * 56 * 112 == 12544


@pytest.mark.parametrize("hw", [(1, 201), (201, 1), (10, 2500), (100, 20001), (29, 5900)])
def test_smart_resize_aspect_ratio_error(hw):
    with pytest.raises(ValueError, match="aspect ratio"):
        hf_smart_resize(*hw)
    with pytest.raises(ValueError, match="aspect ratio"):
        _core.smart_resize(*hw)


def test_smart_resize_bad_arguments():
    for args in ((0, 10), (10, 0), (-5, 10)):
        with pytest.raises(ValueError, match="empty image"):
            _core.smart_resize(*args)
    with pytest.raises(ValueError, match="max_pixels"):
        _core.smart_resize(100, 100, max_pixels=0)
    with pytest.raises(ValueError, match="patch_size"):
        _core.smart_resize(100, 100, patch_size=0)


# ----------------------------------------------------------------------------------------------
# resize_bicubic vs Pillow

RESIZE_CASES = [  # (src h, w) -> (dst h, w)
    ((56, 112), (100, 230)),  # upscale
    ((2400, 1080), (2408, 1092)),  # the phone screenshot, slight upscale
    ((2400, 1080), (2352, 1036)),  # ... slight downscale (AutoGLM's 5 MP budget)
    ((300, 400), (97, 131)),  # downscale, odd target
    ((1500, 2000), (466, 622)),  # strong antialiased downscale
    ((97, 131), (112, 140)),  # odd source
    ((131, 97), (28, 28)),
    ((50, 300), (120, 100)),  # up in one axis, down in the other
    ((400, 100), (50, 90)),  # height shrinks > 2x the width: Pillow runs the vertical pass first
    ((400, 300), (100, 299)),  # vertical first, horizontal barely changes
    ((1, 200), (28, 5600)),  # extreme ratio (smart_resize's upscale of a 1-pixel-high image)
    ((29, 5000), (28, 4984)),
    ((1000, 1000), (3, 3)),  # wide kernels
    ((1, 1), (5, 7)),  # 1-pixel source
    ((10, 10), (1, 1)),  # 1-pixel target
    ((1, 50), (1, 17)),  # horizontal only
    ((7, 1), (7, 3)),
    ((50, 1), (3, 1)),  # vertical only
    ((1, 7), (4, 7)),
    ((33, 47), (33, 47)),  # same size: a copy
]


def pil_resize(a, h, w):
    return np.asarray(PIL_Image.fromarray(a).resize((w, h), BICUBIC))


@pytest.mark.parametrize("src,dst", RESIZE_CASES,
                         ids=[f"{s[0]}x{s[1]}-{d[0]}x{d[1]}" for s, d in RESIZE_CASES])
def test_resize_bicubic_matches_pillow(src, dst):
    worst = 0
    for kind, a in (("noise", rand_image(*src, seed=src[0] * 7 + dst[1])), ("smooth", smooth_image(*src))):
        ours = _core.resize_bicubic(a, dst[1], dst[0])
        want = pil_resize(a, *dst)
        assert ours.shape == want.shape == (dst[0], dst[1], 3) and ours.dtype == np.uint8
        diff = np.abs(ours.astype(np.int16) - want.astype(np.int16))
        worst = max(worst, int(diff.max()))
        print(f"resize {src}->{dst} {kind}: max |diff| {diff.max()}, {np.count_nonzero(diff)} values differ")
        assert diff.max() <= 1
    if X86:  # Pillow's x86-64 wheels compute the kernel without FMA, as we do: exact
        assert worst == 0


def test_resize_bicubic_noncontiguous_input_and_errors():
    a = rand_image(40, 60)
    view = a[::2, ::3]  # strided view
    assert np.array_equal(_core.resize_bicubic(view, 11, 9), pil_resize(np.ascontiguousarray(view), 9, 11))
    with pytest.raises(ValueError, match="uint8"):
        _core.resize_bicubic(a.astype(np.float32), 10, 10)
    with pytest.raises(ValueError, match=r"shape \(40, 60, 4\)"):
        _core.resize_bicubic(np.zeros((40, 60, 4), np.uint8), 10, 10)
    with pytest.raises(ValueError, match="at least 1x1"):
        _core.resize_bicubic(a, 0, 10)
    with pytest.raises(ValueError, match="empty image"):
        _core.resize_bicubic(np.zeros((0, 5, 3), np.uint8), 10, 10)


# ----------------------------------------------------------------------------------------------
# preprocess_image vs transformers' Glm4vImageProcessorPil


@pytest.fixture(scope="module")
def hf_proc(tiny_checkpoint):
    proc = hf_pil.Glm4vImageProcessorPil.from_pretrained(tiny_checkpoint)
    assert proc.size["shortest_edge"] == 12544 and proc.size["longest_edge"] == 9633792
    assert proc.temporal_patch_size == 2 and proc.patch_size == 14 and proc.merge_size == 2
    return proc


def ours_vs_hf(proc, a):
    out = proc(images=[PIL_Image.fromarray(a)], return_tensors="np")
    hf_pv, thw = out["pixel_values"], out["image_grid_thw"]
    pv, gh, gw = _core.preprocess_image(a, list(proc.image_mean), list(proc.image_std), proc.patch_size,
                                        proc.merge_size, proc.temporal_patch_size, proc.size["shortest_edge"],
                                        proc.size["longest_edge"])
    assert thw.tolist() == [[1, gh, gw]]
    p = proc.patch_size
    assert pv.dtype == np.float32 and pv.shape == (gh * gw, 3 * p * p)
    assert hf_pv.dtype == np.float32 and hf_pv.shape == (gh * gw, 3 * 2 * p * p)
    rows = hf_pv.reshape(gh * gw, 3, 2, p, p)  # HF rows are (C, T, py, px); both T slices are the frame
    assert np.array_equal(rows[:, :, 0], rows[:, :, 1])
    return np.abs(rows[:, :, 0] - pv.reshape(gh * gw, 3, p, p)).max()


@pytest.mark.parametrize("hw", [(56, 112), (112, 56), (84, 84), (28 * 5, 28 * 3)])
def test_preprocess_matches_hf_without_resize(hf_proc, hw):
    a = rand_image(*hw, seed=hw[0])
    assert _core.smart_resize(*hw) == hw
    d = ours_vs_hf(hf_proc, a)
    print(f"preprocess {hw} (no resize): max |diff| {d}")
    assert d == 0  # same float64 rescale -> float32 normalize, bit for bit


@pytest.mark.parametrize("hw", [(600, 270), (700, 1078), (97, 131), (20, 20), (2400, 1080)])
def test_preprocess_matches_hf_with_resize(hf_proc, hw):
    a = smooth_image(*hw) if hw[0] > 1000 else rand_image(*hw, seed=hw[1])
    d = ours_vs_hf(hf_proc, a)
    print(f"preprocess {hw} (resized to {_core.smart_resize(*hw)}): max |diff| {d}")
    assert d <= 1 / 255 / min(hf_proc.image_std) + 1e-6  # at most one uint8 level after resizing
    if X86:
        assert d == 0


def test_preprocess_merge_window_order():
    # spec C.3: a 4x8 patch grid (56x112 image); each patch filled with its own value (row * 8 + col).
    p, a = 14, np.zeros((56, 112, 3), np.uint8)
    for r in range(4):
        for c in range(8):
            a[r * p:(r + 1) * p, c * p:(c + 1) * p] = r * 8 + c
    pv, gh, gw = _core.preprocess_image(a, [0.0] * 3, [1 / 255] * 3)  # x/255 / (1/255) ~ the byte value
    assert (gh, gw) == (4, 8)
    got = [divmod(int(round(v)), 8) for v in pv[:, 0]]
    want = [(2 * by + dy, 2 * bx + dx)
            for by in range(2) for bx in range(4) for dy in range(2) for dx in range(2)]
    assert got == want
    assert got[:8] == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    # inside a patch: channel, then row, then column
    b = rand_image(56, 112)
    pv, _, _ = _core.preprocess_image(b, [0.0] * 3, [1 / 255] * 3)
    patch = np.rint(pv[2].reshape(3, p, p)).astype(np.uint8)  # third patch = grid (1, 0)
    assert np.array_equal(patch, b[p:2 * p, 0:p].transpose(2, 0, 1))


def test_preprocess_errors():
    with pytest.raises(ValueError, match="uint8"):
        _core.preprocess_image(np.zeros((56, 56, 3), np.float32), [0.5] * 3, [0.5] * 3)
    with pytest.raises(ValueError, match="std"):
        _core.preprocess_image(np.zeros((56, 56, 3), np.uint8), [0.5] * 3, [0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="aspect ratio"):
        _core.preprocess_image(np.zeros((1, 300, 3), np.uint8), [0.5] * 3, [0.5] * 3)


# ----------------------------------------------------------------------------------------------
# load_image


def _encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_load_image_every_input_kind_agrees(tmp_path):
    a = rand_image(31, 45, seed=3)
    png = _encode(PIL_Image.fromarray(a), "PNG")
    path = tmp_path / "img x.png"  # a space: file:// URLs must be unquoted
    path.write_bytes(png)
    inputs = {
        "array": a, "array (non-contiguous)": np.asfortranarray(a), "pil": PIL_Image.fromarray(a),
        "str path": str(path), "Path": path,
        "bytes": png, "bytearray": bytearray(png), "memoryview": memoryview(png),
        "data url": "data:image/png;base64," + base64.b64encode(png).decode(),
        "data url (line-wrapped)": "data:image/png;base64," + base64.encodebytes(png).decode(),
        "file url": path.as_uri(),
    }
    for name, x in inputs.items():
        got = load_image(x)
        assert got.dtype == np.uint8 and got.shape == (31, 45, 3) and got.flags.c_contiguous, name
        assert np.array_equal(got, a), name


def test_load_image_exif_orientation(tmp_path):
    a = rand_image(20, 30, seed=4)
    a[:5, :5] = 255  # a marker that must move with the rotation
    exif = PIL_Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored image must be rotated 90 degrees clockwise for display
    jpg = _encode(PIL_Image.fromarray(a), "JPEG", quality=95, exif=exif)
    decoded = np.asarray(PIL_Image.open(io.BytesIO(jpg)).convert("RGB"))  # as stored (20x30)
    got = load_image(jpg)
    assert got.shape == (30, 20, 3)
    assert np.array_equal(got, np.rot90(decoded, k=-1))  # clockwise
    p = tmp_path / "rot.jpg"
    p.write_bytes(jpg)
    assert np.array_equal(load_image(p), got)
    assert np.array_equal(load_image(PIL_Image.open(p)), got)


def test_load_image_transparency_on_white():
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = np.arange(6, dtype=np.uint8)[None] * 51  # alpha 0, 51, ..., 255
    got = load_image(rgba)
    assert got.shape == (4, 6, 3)
    assert got[0, 0].tolist() == [255, 255, 255]  # fully transparent -> white
    assert got[0, 5].tolist() == [200, 0, 0]  # opaque -> the colour
    assert np.all(np.diff(got[0, :, 1].astype(int)) <= 0)  # green/blue fall from white as alpha grows
    png = _encode(PIL_Image.fromarray(rgba), "PNG")
    assert np.array_equal(load_image(png), got)  # array and file agree
    la = PIL_Image.fromarray(np.ascontiguousarray(rgba[..., [0, 3]]))  # (H, W, 2) uint8 -> mode "LA"
    assert la.mode == "LA"
    assert load_image(la)[0, 0].tolist() == [255, 255, 255] and load_image(la)[0, 5].tolist() == [200] * 3
    # palette image with a transparent index
    pal = PIL_Image.new("P", (3, 2), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * (256 * 3 - 6))
    pal.info["transparency"] = 1
    assert load_image(_encode(pal, "PNG")).tolist() == [[[255, 255, 255]] * 3] * 2
    pal.info.pop("transparency")
    assert load_image(pal).tolist() == [[[10, 20, 30]] * 3] * 2


def test_load_image_grayscale():
    g = np.random.default_rng(5).integers(0, 256, (9, 11), dtype=np.uint8)
    want = np.repeat(g[..., None], 3, axis=2)
    assert np.array_equal(load_image(g), want)
    assert np.array_equal(load_image(g[..., None]), want)
    assert np.array_equal(load_image(_encode(PIL_Image.fromarray(g), "PNG")), want)
    bw = PIL_Image.fromarray(g).convert("1")
    assert set(np.unique(load_image(bw))) <= {0, 255}


@pytest.mark.parametrize("bad,match", [
    (b"not an image at all", "not an image format"),
    (b"", "0 bytes"),
    ("data:image/png;base64,!!!notbase64", "invalid base64"),
    ("data:image/png;base64", "malformed data"),
    ("http://example.com/cat.png", "offline"),
    ("https://example.com/cat.png", "offline"),
    ("ftp://example.com/cat.png", "unsupported URL scheme"),
    ("file://otherhost/x.png", "remote host"),
    ("/no/such/dir/missing.png", "not found"),
    (12345, "unsupported image type"),
    (None, "unsupported image type"),
    (np.zeros((4, 4, 3), np.float32), "dtype uint8"),
    (np.zeros((4, 4, 2), np.uint8), "shape"),
    (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
    (np.zeros((0, 4, 3), np.uint8), "empty"),
])
def test_load_image_errors(bad, match):
    with pytest.raises(ImageError, match=match) as e:
        load_image(bad)
    assert isinstance(e.value, AutoGLMError)


def test_load_image_corrupt_and_truncated(tmp_path):
    png = _encode(PIL_Image.fromarray(rand_image(40, 40)), "PNG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(png[: len(png) // 2])
    jpg = bytearray(_encode(PIL_Image.fromarray(rand_image(40, 40)), "JPEG"))
    with pytest.raises(ImageError):
        load_image(bytes(jpg[:30]))
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="empty image"):
        load_image(PIL_Image.new("RGB", (0, 5)))
