"""elman: fast, trustworthy Elman recurrent networks.

``import elman`` loads the layer (``elman.ElmanRNN`` and its operators) and nothing else: no plotting, training
or serving code. ``elman.load`` imports the loader on first use.
"""

__version__ = "0.1.0"

from elman.layer import ElmanRNN  # noqa: E402


def __getattr__(name: str):
    if name == "load":
        from elman.inference import load

        return load
    raise AttributeError(f"module 'elman' has no attribute {name!r}")


__all__ = ["ElmanRNN", "__version__", "load"]
