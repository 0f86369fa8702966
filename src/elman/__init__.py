"""elman: fast, trustworthy Elman recurrent networks."""

__version__ = "0.1.0"

from elman.inference import load  # noqa: E402
from elman.layer import ElmanRNN  # noqa: E402

__all__ = ["ElmanRNN", "__version__", "load"]
