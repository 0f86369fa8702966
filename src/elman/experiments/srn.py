"""Elman's simple recurrent network and the stream training shared by the 1990 experiments.

Every experiment presents one long stream, one vector per step, and trains the network to predict the
next vector. Elman updated the weights online at every step and did not backpropagate through the
copy-back connections. Here the stream is cut into ``segments`` contiguous parallel pieces, each step of
training is a window of ``chunk`` steps with backpropagation through time inside it, and the state is
carried (detached) from window to window, as the context units carry it in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from tqdm import tqdm

from elman.layer import ElmanRNN


@dataclass
class SrnSettings:
    """What every experiment sets: the network, and how it is trained on its stream."""

    hidden_size: int = 20
    nonlinearity: str = "sigmoid"  # Elman's units
    initial_context: float = 0.5  # Elman's context units start at 0.5
    init_scale: float | None = None  # weights uniform in +-init_scale; None: nn.RNN's initialisation
    passes: int = 100  # passes over the whole stream
    learning_rate: float = 0.01
    segments: int = 10  # parallel contiguous pieces of the stream
    chunk: int = 16  # truncated BPTT window, in steps
    seed: int = 0

    def network(self, inputs: int, outputs: int, output: str = "sigmoid") -> SimpleRecurrentNetwork:
        torch.manual_seed(self.seed)
        return SimpleRecurrentNetwork(inputs, self.hidden_size, outputs, output, self.nonlinearity,
                                      self.initial_context, self.init_scale)


class SimpleRecurrentNetwork(nn.Module):
    """Input -> ElmanRNN (context starts at ``initial_context``) -> linear readout.

    ``forward(x, state)``: x (T, B, input_size), state (1, B, hidden_size) ->
    (logits (T, B, output_size), hidden (T, B, hidden_size), new state (1, B, hidden_size)).
    ``output`` says how logits become predictions: ``"sigmoid"`` (independent bits, squared error, as
    Elman) or ``"softmax"`` (one item out of many, cross-entropy). ``init_scale``: every weight uniform
    in ``(-init_scale, init_scale)`` (the spec's default for Elman's networks is 0.5); None keeps
    ``nn.RNN``'s initialisation.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        output: Literal["sigmoid", "softmax"] = "sigmoid",
        nonlinearity: str = "sigmoid",
        initial_context: float = 0.5,
        init_scale: float | None = None,
    ):
        super().__init__()
        self.rnn = ElmanRNN(input_size, hidden_size, nonlinearity=nonlinearity)
        self.readout = nn.Linear(hidden_size, output_size)
        if init_scale is not None:
            for weight in self.parameters():
                nn.init.uniform_(weight, -init_scale, init_scale)
        self.output = output
        self.initial_context = initial_context

    def initial_state(self, batch: int) -> Tensor:
        return torch.full((1, batch, self.rnn.hidden_size), self.initial_context)

    def forward(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        hidden, state = self.rnn(x, state)
        return self.readout(hidden), hidden, state

    def predict(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if self.output == "sigmoid" else torch.softmax(logits, dim=-1)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """targets: bit vectors like the logits for sigmoid output, class indices for softmax output."""
        if self.output == "sigmoid":
            return ((torch.sigmoid(logits) - targets) ** 2).mean()
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def train_on_stream(
    model: SimpleRecurrentNetwork,
    inputs: Tensor,
    targets: Tensor,
    training: SrnSettings,
    description: str = "training",
    progress: bool = True,
) -> list[float]:
    """Train to predict ``targets[t]`` from ``inputs[: t + 1]``; returns the mean loss of each pass.

    inputs: (N, F) one stream. targets: (N, F) vectors or (N,) class indices.
    """
    length = inputs.shape[0] // training.segments
    if length < 1:
        raise ValueError(f"a stream of {inputs.shape[0]} steps cannot be cut into {training.segments} segments")

    def as_segments(stream: Tensor) -> Tensor:  # (N, *) -> (length, segments, *)
        cut = stream[: length * training.segments]
        return cut.reshape(training.segments, length, *stream.shape[1:]).transpose(0, 1)

    x, y = as_segments(inputs), as_segments(targets)
    optimizer = torch.optim.Adam(model.parameters(), lr=training.learning_rate)
    losses = []
    bar = tqdm(range(training.passes), desc=description, unit="pass", disable=not progress, leave=False)
    for _ in bar:
        state = model.initial_state(training.segments)
        total, windows = 0.0, 0
        for start in range(0, length, training.chunk):
            logits, _, state = model(x[start : start + training.chunk], state)
            state = state.detach()
            loss = model.loss(logits, y[start : start + training.chunk])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, windows = total + loss.item(), windows + 1
        losses.append(total / windows)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses


@torch.no_grad()
def run_on_stream(model: SimpleRecurrentNetwork, inputs: Tensor) -> tuple[Tensor, Tensor]:
    """Present a stream once, without learning, from the initial context.

    inputs: (N, F) -> (predictions (N, output_size), hidden states (N, hidden_size)).
    """
    logits, hidden, _ = model(inputs.unsqueeze(1), model.initial_state(1))
    return model.predict(logits.squeeze(1)), hidden.squeeze(1)
