"""The reference implementation: the Elman recurrence written as the plain step-by-step loop.

This is the test oracle for the fast path, and the place to read what the layer computes. It is slow
on purpose: every step is visible, autograd does the BPTT, and variable lengths are handled with the
most literal rule there is, "a sequence that has ended keeps its state and outputs zeros":

    for t in 0 .. T-1 (or T-1 .. 0 for the reverse direction):
        h_new  = act(x_t W_ih^T + b_ih + h W_hh^T + b_hh)      x_t: (B, I), h: (B, H)
        active = t < length                                      (B, 1)
        h      = h_new where active else h
        out_t  = h_new where active else 0                       out: (T, B, H)

The reverse direction walks from the last step back, so each sequence starts at its own last valid
step, exactly as ``torch.nn.RNN`` does on a PackedSequence.
"""

from __future__ import annotations

import torch
from torch import Tensor

ACTIVATION_FUNCTIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}


def reference_direction(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    activation: str,
    reverse: bool,
    lengths: Tensor | None = None,
    rows: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One layer, one direction, step by step.

    Args:
        x: (T, B, I) time-major input; or, with ``rows`` (T, B), a table (V, I) whose row ``rows[t, b]`` is
            step t of sequence b.  h0: (B, H).  w_ih: (H, I).  w_hh: (H, H).  b_ih, b_hh: (H,) or None.
        activation: "tanh", "relu" or "sigmoid".  reverse: walk from the last step to the first.
        lengths: (B,) the valid steps of each sequence, any order; None means every sequence has T steps.

    Returns:
        out: (T, B, H), the state at each valid step and 0 past each sequence's end.
        h_n: (B, H), the state after the last valid step in walking order.
    """
    act = ACTIVATION_FUNCTIONS[activation]
    if rows is not None:
        x = x[rows]
    if lengths is not None:
        lengths = lengths.to(x.device)
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    h = h0
    outputs = [None] * x.shape[0]
    for t in steps:
        z = x[t] @ w_ih.t() + h @ w_hh.t()
        if b_ih is not None:
            z = z + b_ih + b_hh
        h_new = act(z)
        if lengths is None:
            h, outputs[t] = h_new, h_new
        else:
            active = (t < lengths).unsqueeze(1)
            h = torch.where(active, h_new, h)
            outputs[t] = torch.where(active, h_new, torch.zeros_like(h_new))
    return torch.stack(outputs), h
