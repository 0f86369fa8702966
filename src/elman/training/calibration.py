"""Temperature calibration: one scalar fitted on held-out training data, folded into the output layer.

A language model trained with dropout and evaluated without it is overconfident on text it has not seen:
its logits are too sharp. Dividing them by a temperature :math:`T > 1`, fitted to minimise the cross-entropy
on characters held out of training (Guo et al. 2017, "On Calibration of Modern Neural Networks"), corrects
that. Folding :math:`1/T` into the output layer (``W_out / T``, ``b / T``) makes the checkpoint itself
calibrated, so evaluation, generation and serving need no extra setting; sampling at ``--temperature 1``
then draws from the calibrated distribution.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from elman.models.language_model import LanguageModel, scored_line_logits, scored_stream_logits

SHARPNESS_RANGE = (1e-2, 1e2)  # the search interval for 1/T; far beyond any useful temperature


@torch.no_grad()
def held_out_logits(model: LanguageModel, kind: str, held_out: tuple,
                    chunk_length: int = 4096) -> tuple[Tensor, Tensor]:
    """-> (logits (N, V), targets (N,)) for every scored character of ``held_out``: a long text ``(ids,)``,
    read statefully from a zero state in chunks of ``chunk_length`` (every prediction is scored), or lines
    ``(ids (N, T), lengths (N,), conditions (N,) or None)``."""
    pieces = (scored_stream_logits(model, *held_out, chunk_length=chunk_length) if kind == "text"
              else scored_line_logits(model, *held_out))
    logits, targets = zip(*pieces, strict=True)
    return torch.cat(logits).float(), torch.cat(targets)


def fit_temperature(logits: Tensor, targets: Tensor, iterations: int = 60) -> float:
    """The temperature T minimising mean cross-entropy of ``logits / T`` (N, V) against ``targets`` (N,).

    The loss is convex in the sharpness :math:`\\beta = 1/T`, with derivative
    :math:`\\text{mean}(E_{p_\\beta}[z] - z_y)`, which rises with :math:`\\beta`; bisection on its sign (in
    log space) finds the minimum without step sizes to tune."""
    if logits.shape[0] == 0:
        raise ValueError("no held-out characters to fit a temperature on")
    chosen = logits.gather(1, targets[:, None])[:, 0]

    def slope(beta: float) -> float:
        p = (beta * logits).softmax(-1)
        return float(((p * logits).sum(-1) - chosen).mean())

    low, high = (math.log(b) for b in SHARPNESS_RANGE)
    for _ in range(iterations):
        middle = (low + high) / 2
        low, high = (middle, high) if slope(math.exp(middle)) < 0 else (low, middle)
    return 1.0 / math.exp((low + high) / 2)


def calibrate(model: LanguageModel, kind: str, held_out: tuple) -> dict:
    """Fit the temperature on ``held_out`` and fold it into ``model.output``; returns the fit's report:
    temperature, characters, and the held-out loss before and after (nats/char)."""
    logits, targets = held_out_logits(model, kind, held_out)
    temperature = fit_temperature(logits, targets)
    with torch.no_grad():
        model.output.weight.div_(temperature)
        model.output.bias.div_(temperature)
    return {"temperature": temperature, "characters": int(targets.shape[0]),
            "loss_before": float(nn.functional.cross_entropy(logits, targets)),
            "loss_after": float(nn.functional.cross_entropy(logits / temperature, targets))}
