"""autoglm-gguf: run AutoGLM-Phone-9B / GLM-4.1V locally from GGUF files."""

from ._core import __version__
from .errors import (
                     AutoGLMError,
                     ContextFullError,
                     ConversionError,
                     GGUFFileError,
                     ImageError,
                     OutOfMemoryError,
                     SessionBusyError,
)
from .model import AutoGLM

__all__ = ["AutoGLM", "AutoGLMError", "ContextFullError", "ConversionError", "GGUFFileError", "ImageError",
           "OutOfMemoryError", "SessionBusyError", "__version__"]
