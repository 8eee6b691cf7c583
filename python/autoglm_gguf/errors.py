"""Exception types. Every message says what was wrong, where, and what to do about it."""


class AutoGLMError(Exception):
    """Base class of every error autoglm-gguf raises on purpose."""


class ConversionError(AutoGLMError):
    """The input checkpoint or the requested conversion is not valid."""


class GGUFFileError(AutoGLMError):
    """A GGUF file could not be read or is not what was expected."""


class ContextFullError(AutoGLMError, ValueError):
    """The prompt (plus what is generated) does not fit in n_ctx."""


class ImageError(AutoGLMError, ValueError):
    """An image could not be loaded: missing file, undecodable or empty data, unsupported input type or URL."""
