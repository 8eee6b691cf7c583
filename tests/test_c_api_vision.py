"""The C API's vision part (autoglm.h: autoglm_vision_*, autoglm_image_*, autoglm_generation_start_images),
through ctypes on the Python extension (which links the same C API object file). Raw pixels of any
stride and channel count must give exactly what the Python API gives for the same picture."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from _capi import Image, ImageParams, Timings
from autoglm_gguf import AutoGLM, _core
from autoglm_gguf.images import load_image


@pytest.fixture(scope="module")
def vision(capi, tiny_f32_files):
    h = ctypes.c_void_p()
    assert capi.autoglm_vision_load(str(tiny_f32_files[1]).encode(), capi.autoglm_vision_default_params(),
                                    ctypes.byref(h)) == 0
    yield h
    capi.autoglm_vision_free(h)


@pytest.fixture(scope="module")
def llm(tiny_f32_files):
    return AutoGLM(tiny_f32_files[0], mmproj_path=tiny_f32_files[1], n_ctx=1024)


def c_image(arr: np.ndarray, pad: int = 0) -> tuple[Image, np.ndarray]:
    """An autoglm_image over `arr` (H, W[, C]) stored with `pad` extra bytes at the end of each row."""
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    buf = np.zeros((h, w * c + pad), np.uint8)
    buf[:, :w * c] = arr.reshape(h, w * c)
    return Image(buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), w, h, w * c + pad, c), buf


def embed(capi, vision, img: Image, max_pixels=0):
    n = ctypes.c_size_t()
    params = ImageParams(0, max_pixels)
    assert capi.autoglm_image_embed(vision, ctypes.byref(img), params, None, 0, ctypes.byref(n)) == -2
    out = (ctypes.c_float * n.value)()
    assert capi.autoglm_image_embed(vision, ctypes.byref(img), params, out, n.value, ctypes.byref(n)) == 0, \
        capi.autoglm_last_error()
    return np.ctypeslib.as_array(out).reshape(-1, capi.autoglm_vision_n_embd(vision))


@pytest.mark.parametrize("channels,pad", [(3, 0), (3, 5), (4, 0), (1, 3)])
def test_raw_pixels_give_pythons_embeddings(capi, vision, llm, channels, pad):
    rng = np.random.default_rng(channels + pad)
    shape = (61, 97) if channels == 1 else (61, 97, channels)
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    if channels == 4:
        arr[..., 3] = rng.choice([0, 1, 127, 128, 200, 254, 255], size=shape[:2])  # every alpha path
    img, _pixels = c_image(arr, pad)  # _pixels: the buffer img points into, alive until the test ends
    got = embed(capi, vision, img, max_pixels=60000)
    want = llm.embed_image(arr, image_max_pixels=60000)
    assert np.array_equal(got, want)  # the same pixels (alpha composited like Pillow) -> the same floats
    rows, cols = ctypes.c_int32(), ctypes.c_int32()
    assert capi.autoglm_image_grid(vision, 97, 61, ImageParams(0, 60000), ctypes.byref(rows), ctypes.byref(cols)) == 0
    h, w = _core.smart_resize(61, 97, max_pixels=60000)
    assert (rows.value, cols.value) == (h // 28, w // 28) and got.shape[0] == rows.value * cols.value


def test_matmul_type_is_pythons_vision_matmul_type(capi, tiny_f32_files):
    """Both APIs default to "auto"; "file" gives the F32 path's floats in both."""
    params = capi.autoglm_vision_default_params()
    params.matmul_type = b"file"
    h = ctypes.c_void_p()
    assert capi.autoglm_vision_load(str(tiny_f32_files[1]).encode(), params, ctypes.byref(h)) == 0
    try:
        arr = np.random.default_rng(7).integers(0, 256, (61, 97, 3), dtype=np.uint8)
        img, _pixels = c_image(arr)
        got = embed(capi, h, img, max_pixels=60000)
        llm_file = AutoGLM(tiny_f32_files[0], mmproj_path=tiny_f32_files[1], n_ctx=256, vision_matmul_type="file")
        assert np.array_equal(got, llm_file.embed_image(arr, image_max_pixels=60000))
    finally:
        capi.autoglm_vision_free(h)


def test_rgba_is_composited_like_pillow(llm):
    a = np.arange(256, dtype=np.uint8)
    rgba = np.stack(np.meshgrid(a, a, indexing="ij"), -1)  # every (colour, alpha) pair
    rgba = np.concatenate([rgba[..., :1], rgba[..., :1], rgba[..., :1], rgba[..., 1:]], -1)
    # The C API's integer formula, written out here, against Pillow through the Python loader.
    c, al = rgba[..., 0].astype(np.uint32), rgba[..., 3].astype(np.uint32)
    tmp = 128 * (c * al + 255 * (255 - al)) + (0x80 << 7)
    ours = np.where(al == 0, 255, (((tmp >> 8) + tmp) >> 8) >> 7).astype(np.uint8)
    assert np.array_equal(load_image(rgba)[..., 0], ours)


def test_generation_with_images_matches_python(capi, vision, llm, tiny_f32_files):
    model, session = ctypes.c_void_p(), ctypes.c_void_p()
    assert capi.autoglm_model_load(str(tiny_f32_files[0]).encode(), capi.autoglm_model_default_params(),
                                   ctypes.byref(model)) == 0
    sp = capi.autoglm_session_default_params()
    sp.n_ctx = 1024
    assert capi.autoglm_session_create(model, sp, ctypes.byref(session)) == 0
    rng = np.random.default_rng(7)
    imgs = [rng.integers(0, 256, (90, 150, 3), dtype=np.uint8), rng.integers(0, 256, (120, 64, 3), dtype=np.uint8)]
    slot = "<|begin_of_image|><|image|><|end_of_image|>"
    prompt = llm.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "A"},
                                                                   {"type": "image"}, {"type": "text", "text": "B?"}]}])
    assert prompt.count(slot) == 2
    c_imgs = [c_image(a) for a in imgs]
    arr = (Image * 2)(*(ci for ci, _ in c_imgs))
    try:
        def run(n_images):
            gen, n, done = ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_bool(False)
            gp = capi.autoglm_generation_default_params()
            gp.max_tokens = 24
            status = capi.autoglm_generation_start_images(session, vision, prompt.encode(), arr, n_images,
                                                          ImageParams(0, 100000), capi.autoglm_sampling_default_params(),
                                                          gp, ctypes.byref(gen))
            if status != 0:
                return status, b"", None
            out, buf, t = b"", ctypes.create_string_buffer(64), Timings()
            while capi.autoglm_generation_next(gen, buf, 64, ctypes.byref(n), ctypes.byref(done)) == 0 and not done.value:
                out += buf.raw[:n.value]
            assert capi.autoglm_generation_timings(gen, ctypes.byref(t)) == 0
            capi.autoglm_generation_free(gen)
            return 0, out, t

        assert run(1)[0] == -1
        assert "2 image slot(s)" in capi.autoglm_last_error().decode() and "1 image(s)" in capi.autoglm_last_error().decode()
        status, text, t = run(2)
        assert status == 0
        want = llm.generate(prompt, images=imgs, max_tokens=24, image_max_pixels=100000)
        assert text.decode("utf-8", errors="replace") == want
        assert t.n_image_tokens == llm.last_timings["image_tokens"] > 0
        # Again: the images come from the vision handle's cache and the whole prompt from the session's.
        status, text2, t2 = run(2)
        assert status == 0 and text2 == text and t2.image_ms == 0.0 and t2.n_prompt_reused == t2.n_prompt - 1
    finally:
        capi.autoglm_session_free(session)
        capi.autoglm_model_free(model)


def test_vision_load_errors(capi, tiny_f32_files, tmp_path):
    h = ctypes.c_void_p()
    assert capi.autoglm_vision_load(str(tmp_path / "none.gguf").encode(), capi.autoglm_vision_default_params(),
                                    ctypes.byref(h)) == -3 and not h.value
    assert capi.autoglm_vision_load(str(tiny_f32_files[0]).encode(), capi.autoglm_vision_default_params(),
                                    ctypes.byref(h)) == -3
    assert "expected a vision projector" in capi.autoglm_last_error().decode()
    params = capi.autoglm_vision_default_params()
    assert params.matmul_type == b"auto"
    params.matmul_type = b"int4"
    assert capi.autoglm_vision_load(str(tiny_f32_files[1]).encode(), params, ctypes.byref(h)) != 0 and not h.value
    assert "matmul_type 'int4' is unknown" in capi.autoglm_last_error().decode()
    assert capi.autoglm_vision_n_embd(None) == -1
    bad = Image(None, 10, 10, 30, 3)
    n = ctypes.c_size_t()
    v = ctypes.c_void_p()
    assert capi.autoglm_vision_load(str(tiny_f32_files[1]).encode(), capi.autoglm_vision_default_params(),
                                    ctypes.byref(v)) == 0
    try:
        buf = np.zeros((10, 30), np.uint8)
        for img, words in [(bad, "image.pixels is NULL"),
                           (Image(buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), 10, 10, 20, 3), "stride 20"),
                           (Image(buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), 10, 10, 30, 2), "channels is 2"),
                           (Image(buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), 0, 10, 30, 3), "0x10")]:
            out = (ctypes.c_float * 100000)()
            assert capi.autoglm_image_embed(v, ctypes.byref(img), ImageParams(0, 0), out, 100000, ctypes.byref(n)) == -1
            assert words in capi.autoglm_last_error().decode(), (words, capi.autoglm_last_error())
    finally:
        capi.autoglm_vision_free(v)
