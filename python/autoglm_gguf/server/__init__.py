"""OpenAI-compatible HTTP server for autoglm-gguf (`autoglm-gguf serve`); needs the `server` extra."""

from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def create_app(settings: ServerSettings, **kwargs):
    from .app import create_app as _create_app

    return _create_app(settings, **kwargs)
