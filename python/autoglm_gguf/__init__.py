"""autoglm-gguf: run AutoGLM-Phone-9B / GLM-4.1V locally from GGUF files."""

from ._core import __version__

__all__ = ["__version__"]
