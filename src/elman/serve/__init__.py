"""The HTTP service and its web page: ``elman serve --model DIR``."""

from elman.serve.app import Limits, create_app, load_models

__all__ = ["Limits", "create_app", "load_models"]
