"""Inputs that used to take the process down (issue #12's findings) now get clear errors."""

from __future__ import annotations

import os

import pytest

from autoglm_gguf import AutoGLM, ImageError
from autoglm_gguf.images import load_image


@pytest.fixture(scope="module")
def model_file(tiny_checkpoint_f32, convert_tiny):
    return convert_tiny(tiny_checkpoint_f32, "f32", "f32")[0]


def test_absurd_thread_counts_are_refused(model_file):
    for n in (32768, 70000):
        with pytest.raises(ValueError, match=f"n_threads = {n} is more than 1024"):
            AutoGLM(model_file, n_ctx=64, n_threads=n)
    assert AutoGLM(model_file, n_ctx=64, n_threads=3).generate("[gMASK]<sop>hi", max_tokens=2) is not None


def test_device_files_and_fifos_are_not_read_as_images(tmp_path):
    with pytest.raises(ImageError, match="not a regular file"):
        load_image("/dev/zero")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):  # would block forever if opened
        load_image(str(fifo))
    with pytest.raises(ImageError, match="directory"):
        load_image(str(tmp_path))
