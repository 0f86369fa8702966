"""elman: fast, trustworthy Elman recurrent networks."""

from elman.layer import ElmanRNN

__version__ = "0.1.0"
__all__ = ["ElmanRNN", "__version__"]
