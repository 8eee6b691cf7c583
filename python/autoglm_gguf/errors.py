"""Exception types. Every message says what was wrong, where, and what to do about it."""


class AutoGLMError(Exception):
    """Base class of every error autoglm-gguf raises on purpose."""


class ConversionError(AutoGLMError):
    """The input checkpoint or the requested conversion is not valid."""


class GGUFFileError(AutoGLMError):
    """A GGUF file could not be read or is not what was expected."""


class ContextFullError(AutoGLMError, ValueError):
    """The prompt (plus what is generated) does not fit in n_ctx."""


class SessionBusyError(AutoGLMError, RuntimeError):
    """A session (one conversation context) was used by two threads at once, or a generation was continued
    after its session had been used by something else."""


class OutOfMemoryError(AutoGLMError, MemoryError):
    """Weights, KV cache or compute buffers could not be allocated; use a smaller n_ctx/n_batch or image."""


class ImageError(AutoGLMError, ValueError):
    """An image could not be loaded: missing file, undecodable or empty data, unsupported input type or URL."""
