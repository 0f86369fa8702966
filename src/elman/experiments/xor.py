"""Elman (1990), experiment 1: temporal XOR.

A 3,000-bit stream of triplets (two random bits, then their XOR) is presented one bit at a time and the
network predicts the next bit. Only every third bit is predictable, so after training the prediction
error, folded onto the 12-step cycle, is a period-3 sawtooth: low when predicting bits 3, 6, 9 and 12
(after inputs 2, 5, 8, 11), high elsewhere.

Network: 1 input -> ElmanRNN (sigmoid units, context starting at 0.5) -> 1 sigmoid output, trained on
squared error. Elman used 2 hidden units and online updates without backpropagation through time;
here the stream is cut into parallel segments and trained with truncated BPTT and Adam, which learns
the same rule in seconds (8 hidden units by default: 2 converge only for some seeds).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

from elman.datasets.elman1990 import temporal_xor
from elman.layer import ElmanRNN

CYCLE = 12


@dataclass
class XorConfig:
    num_bits: int = 3000  # the training stream (Elman: 3,000)
    hidden_size: int = 8
    nonlinearity: str = "sigmoid"  # Elman's units
    initial_context: float = 0.5  # Elman's context units start at 0.5
    passes: int = 150  # passes over the stream (Elman: 600 online passes)
    segments: int = 10  # the stream is trained as this many parallel, contiguous segments
    chunk: int = 12  # truncated BPTT window, in steps
    learning_rate: float = 0.03
    eval_windows: int = 100  # 12-step windows averaged for the figure (Elman: 1,200 steps)
    seed: int = 0


class SimpleRecurrentNetwork(nn.Module):
    """Elman's SRN: bits (T, B, 1) -> predicted next bits (T, B, 1), with the hidden state carried."""

    def __init__(self, config: XorConfig):
        super().__init__()
        self.rnn = ElmanRNN(1, config.hidden_size, nonlinearity=config.nonlinearity)
        self.readout = nn.Linear(config.hidden_size, 1)
        self.initial_context = config.initial_context

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.full((1, batch, self.rnn.hidden_size), self.initial_context)

    def forward(self, bits: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, state = self.rnn(bits, state)
        return torch.sigmoid(self.readout(hidden)), state


@dataclass
class XorResult:
    config: dict
    error_by_cycle: list[float]  # mean squared error after input k = 1..12 of the cycle
    rms_by_cycle: list[float]  # root of the above
    predictable_error: float  # mean over cycles 2, 5, 8, 11 (predicting the XOR bit)
    unpredictable_error: float  # mean over the other cycles
    sawtooth: bool  # predictable error clearly below the rest
    final_training_loss: float


def train(model: SimpleRecurrentNetwork, config: XorConfig, progress: bool = True) -> float:
    stream = temporal_xor(config.num_bits, seed=config.seed)
    targets = torch.roll(stream, -1)  # the next bit; the stream wraps around as in the paper
    length = config.num_bits // config.segments // config.chunk * config.chunk
    inputs = stream[: length * config.segments].view(config.segments, length).T.unsqueeze(2)  # (L, B, 1)
    wanted = targets[: length * config.segments].view(config.segments, length).T.unsqueeze(2)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_value = float("nan")
    for _ in tqdm(range(config.passes), desc="xor", unit="pass", disable=not progress, leave=False):
        state = model.initial_state(config.segments)
        total = 0.0
        for start in range(0, length, config.chunk):
            prediction, state = model(inputs[start : start + config.chunk], state)
            state = state.detach()
            loss = ((prediction - wanted[start : start + config.chunk]) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        loss_value = total / (length // config.chunk)
    return loss_value


@torch.no_grad()
def error_by_cycle(model: SimpleRecurrentNetwork, config: XorConfig) -> torch.Tensor:
    """Squared error of each prediction on a fresh stream, averaged per position of the 12-step cycle."""
    steps = config.eval_windows * CYCLE
    stream = temporal_xor(steps + 3, seed=config.seed + 1)
    prediction, _ = model(stream[:steps].view(steps, 1, 1), model.initial_state(1))
    squared = (prediction.view(steps) - stream[1 : steps + 1]) ** 2
    return squared.view(config.eval_windows, CYCLE).mean(0)


def run(config: XorConfig | None = None, progress: bool = True) -> XorResult:
    config = config or XorConfig()
    torch.manual_seed(config.seed)
    model = SimpleRecurrentNetwork(config)
    final_loss = train(model, config, progress)
    errors = error_by_cycle(model, config)
    predictable = errors[1::3].mean().item()  # cycles 2, 5, 8, 11
    unpredictable = torch.cat([errors[0::3], errors[2::3]]).mean().item()
    return XorResult(
        config=asdict(config),
        error_by_cycle=errors.tolist(),
        rms_by_cycle=errors.sqrt().tolist(),
        predictable_error=predictable,
        unpredictable_error=unpredictable,
        sawtooth=predictable < 0.5 * unpredictable,
        final_training_loss=final_loss,
    )


def format_result(result: XorResult) -> str:
    """The figure as text: one bar per cycle position, predictable positions marked."""
    lines = [
        "Temporal XOR (Elman 1990, Fig. 3): squared error predicting the next bit, by position in the cycle",
        "cycle  error  ",
    ]
    for k, error in enumerate(result.error_by_cycle, start=1):
        mark = "  <- XOR bit next" if k % 3 == 2 else ""
        lines.append(f"{k:>5}  {error:5.3f}  {'#' * round(error * 100)}{mark}")
    verdict = "period-3 sawtooth: yes" if result.sawtooth else "period-3 sawtooth: NO (try another --seed)"
    lines.append(
        f"mean error predicting the XOR bit {result.predictable_error:.3f}, "
        f"the random bits {result.unpredictable_error:.3f} -> {verdict}"
    )
    return "\n".join(lines)
