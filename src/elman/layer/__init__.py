"""The recurrence: ``ElmanRNN``, its reference loop (the test oracle) and its fused fast path."""

from elman.layer.fused import ACTIVATIONS, compiled_loops
from elman.layer.rnn import ElmanRNN

__all__ = ["ACTIVATIONS", "ElmanRNN", "compiled_loops"]
