"""The HTTP service and its web page: ``elman serve --model DIR``. ``Limits`` loads without the web framework;
``create_app`` and ``load_models`` import it on first use."""

from elman.serve.limits import Limits


def __getattr__(name: str):
    if name in ("create_app", "load_models"):
        from elman.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'elman.serve' has no attribute {name!r}")


__all__ = ["Limits", "create_app", "load_models"]
