"""ctypes mirrors of the public C API's structs (native/include/autoglm.h) and its function prototypes, for
the tests that call the C API through the Python extension (which links the same C API object file).

One copy for every test module: a mirror that drifts from the header makes ctypes pass garbage silently, so
there is exactly one place to check against autoglm.h. Tests get the typed library from conftest's `capi`
fixture and import from here the structs they build themselves."""

from __future__ import annotations

import ctypes
import sys
from ctypes import (
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_double,
    c_float,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)

import pytest

from autoglm_gguf import _core


class SamplingParams(Structure):
    _fields_ = [("temperature", c_float), ("top_k", c_int32), ("top_p", c_float), ("min_p", c_float),
                ("repeat_penalty", c_float), ("frequency_penalty", c_float), ("presence_penalty", c_float),
                ("penalty_last_n", c_int32), ("seed", c_uint64)]


class GenerationParams(Structure):
    _fields_ = [("max_tokens", c_int32), ("stop", POINTER(c_char_p)), ("n_stop", c_size_t),
                ("stop_at_eog", c_bool)]


class ModelParams(Structure):
    _fields_ = [("n_gpu_layers", c_int32), ("n_threads", c_int32), ("use_repack", c_bool),
                ("progress_callback", c_void_p), ("progress_callback_user_data", c_void_p)]


class SessionParams(Structure):
    _fields_ = [("n_ctx", c_uint32), ("n_batch", c_uint32), ("kv_type", c_int),
                ("abort_callback", c_void_p), ("abort_callback_user_data", c_void_p)]


class VisionParams(Structure):
    _fields_ = [("n_threads", c_int32), ("use_gpu", c_bool), ("cache_bytes", c_size_t), ("matmul_type", c_char_p)]


class Image(Structure):
    _fields_ = [("pixels", POINTER(c_uint8)), ("width", c_int32), ("height", c_int32), ("stride", c_size_t),
                ("channels", c_int32)]


class ImageParams(Structure):
    _fields_ = [("min_pixels", c_int64), ("max_pixels", c_int64)]


class Timings(Structure):
    _fields_ = [("n_prompt", c_uint32), ("n_prompt_reused", c_uint32), ("n_generated", c_uint32),
                ("prompt_ms", c_double), ("gen_ms", c_double), ("prompt_tokens_per_s", c_double),
                ("gen_tokens_per_s", c_double), ("image_ms", c_double), ("n_image_tokens", c_uint32)]


_handle, _status = c_void_p, c_int  # models, sessions, ... are opaque pointers; autoglm_status is a C enum

# name -> (restype, argtypes): the functions the tests call.
PROTOTYPES = {
    "autoglm_version": (c_char_p, []),
    "autoglm_last_error": (c_char_p, []),
    "autoglm_model_default_params": (ModelParams, []),
    "autoglm_session_default_params": (SessionParams, []),
    "autoglm_sampling_default_params": (SamplingParams, []),
    "autoglm_generation_default_params": (GenerationParams, []),
    "autoglm_model_load": (_status, [c_char_p, ModelParams, POINTER(_handle)]),
    "autoglm_model_free": (None, [_handle]),
    "autoglm_model_n_vocab": (c_int32, [_handle]),
    "autoglm_tokenize": (_status, [_handle, c_char_p, c_bool, POINTER(c_int32), c_size_t, POINTER(c_size_t)]),
    "autoglm_session_create": (_status, [_handle, SessionParams, POINTER(_handle)]),
    "autoglm_session_free": (None, [_handle]),
    "autoglm_generation_start": (_status, [_handle, c_char_p, c_bool, SamplingParams, GenerationParams,
                                           POINTER(_handle)]),
    "autoglm_generation_next": (_status, [_handle, c_char_p, c_size_t, POINTER(c_size_t), POINTER(c_bool)]),
    "autoglm_generation_finish_reason": (c_int, [_handle]),
    "autoglm_generation_timings": (_status, [_handle, POINTER(Timings)]),
    "autoglm_generation_free": (None, [_handle]),
    "autoglm_vision_default_params": (VisionParams, []),
    "autoglm_image_default_params": (ImageParams, []),
    "autoglm_vision_load": (_status, [c_char_p, VisionParams, POINTER(_handle)]),
    "autoglm_vision_free": (None, [_handle]),
    "autoglm_vision_n_embd": (c_int32, [_handle]),
    "autoglm_image_grid": (_status, [_handle, c_int32, c_int32, ImageParams, POINTER(c_int32),
                                     POINTER(c_int32)]),
    "autoglm_image_embed": (_status, [_handle, POINTER(Image), ImageParams, POINTER(c_float), c_size_t,
                                      POINTER(c_size_t)]),
    "autoglm_generation_start_images": (_status, [_handle, _handle, c_char_p, POINTER(Image), c_size_t,
                                                  ImageParams, SamplingParams, GenerationParams,
                                                  POINTER(_handle)]),
}


def load_capi() -> ctypes.CDLL:
    """The extension opened as a C library, every function in PROTOTYPES typed."""
    if sys.platform == "win32":
        pytest.skip("the extension exports the C API only where symbols are visible by default (not Windows)")
    lib = ctypes.CDLL(_core.__file__)
    for name, (restype, argtypes) in PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib
