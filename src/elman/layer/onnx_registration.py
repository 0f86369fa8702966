"""Registers the ONNX translations of the ``elman::`` operators (``onnx.py``) in time for ``torch.onnx.export``.

``torch.onnx.export(..., dynamo=True)`` builds its table of translations from onnxscript's registry of torch
operators when an export starts, before the model is traced; so ours must be registered by then, without the
user's help. Importing onnxscript takes about a second, too long for ``import elman``. So ``install`` registers
them at once where that registry is already imported, and otherwise right after it is imported (a finder on
``sys.meta_path`` that wraps the import of that one module); where onnxscript is not installed, it does nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

REGISTRY_MODULE = "onnxscript.function_libs.torch_lib.registration"


def register() -> None:
    import elman.layer.onnx  # noqa: F401 - importing it registers the translations


def install() -> None:
    if REGISTRY_MODULE in sys.modules:
        register()
    elif importlib.util.find_spec("onnxscript") is not None:
        sys.meta_path.insert(0, _RegisterAfterImport())


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``REGISTRY_MODULE`` is imported, it hands on the ordinary finders' spec with
    a loader that registers the translations once the module has run, and steps aside."""

    def find_spec(self, name, path, target=None):
        if name != REGISTRY_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def run_then_register(module) -> None:
            run_module(module)
            register()

        spec.loader.exec_module = run_then_register
        return spec


def refuse_legacy_export() -> None:
    """Makes the TorchScript-based ONNX exporter (``torch.onnx.export(..., dynamo=False)``) refuse the operators
    by name and say what works; called while ``torch.jit`` traces them."""
    from torch.onnx import register_custom_op_symbolic

    for name in ("rnn_direction", "hashed_dropout"):
        register_custom_op_symbolic(f"elman::{name}", _refuse, opset_version=1)


def _refuse(graph, *inputs, **attributes):
    raise RuntimeError(
        "elman's operators have no translation in the TorchScript-based ONNX exporter (dynamo=False). Export "
        "with torch.onnx.export(model, args, dynamo=True), which turns each ElmanRNN layer and direction into "
        "ONNX's RNN operator, or use torch.export.export.")
