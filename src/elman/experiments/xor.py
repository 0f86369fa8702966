"""Elman (1990), experiment 1: temporal XOR (Fig. 3).

A 3,000-bit stream of triplets (two random bits, then their XOR) is presented one bit at a time and the
network predicts the next bit. Only every third bit is predictable, so after training the prediction
error, folded onto the 12-step cycle, is a period-3 sawtooth: low when predicting bits 3, 6, 9 and 12
(after inputs 2, 5, 8, 11), high elsewhere.

Network: 1 input -> 8 sigmoid hidden units (context starting at 0.5) -> 1 sigmoid output, squared
error. Elman used 2 hidden units; they converge only for some seeds (``XorConfig(hidden_size=2)`` to try).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from elman.datasets.elman1990 import temporal_xor
from elman.experiments.results import Check, ExperimentResult
from elman.experiments.srn import SimpleRecurrentNetwork, SrnSettings, run_on_stream, train_on_stream
from elman.plots import new_figure, save_figure

CYCLE = 12
# why our XOR-bit error is far below the paper's, said in the report beside the numbers
LEVEL_NOTE = ("The paper's minima (~0.17) are a 2-unit network trained by online updates that learnt\n"
              "the XOR bit only partly; 8 units and Adam learn it almost exactly. The claim checked is\n"
              "the sawtooth's shape (the XOR bit predictable, the random bits not: their error stays\n"
              "near chance, 0.25), not its level.")


@dataclass
class XorConfig(SrnSettings):
    num_bits: int = 3000  # the training stream (Elman: 3,000)
    hidden_size: int = 8
    passes: int = 150  # Elman: 600 online passes
    learning_rate: float = 0.03
    chunk: int = 12
    eval_windows: int = 100  # 12-step windows averaged for the figure (Elman: 1,200 steps)


def error_by_cycle(model: SimpleRecurrentNetwork, config: XorConfig) -> torch.Tensor:
    """Squared error of each prediction on a fresh stream, averaged per position of the 12-step cycle."""
    steps = config.eval_windows * CYCLE
    stream = temporal_xor(steps + 3, seed=config.seed + 1)
    prediction, _ = run_on_stream(model, stream[:steps].unsqueeze(1))
    squared = (prediction.squeeze(1) - stream[1 : steps + 1]) ** 2
    return squared.view(config.eval_windows, CYCLE).mean(0)


def sawtooth_table(errors: list[float]) -> str:
    lines = ["cycle  error"]
    for k, error in enumerate(errors, start=1):
        mark = "  <- XOR bit next" if k % 3 == 2 else ""
        lines.append(f"{k:>5}  {error:5.3f}  {'#' * round(error * 100)}{mark}")
    return "\n".join(lines)


def plot(errors: list[float], path: Path) -> None:
    figure, axes = new_figure(figsize=(6, 3.2))
    cycles = range(1, CYCLE + 1)
    axes.plot(cycles, errors, marker="o", color="black")
    axes.set(xlim=(0, 13), ylim=(0, 0.5), xlabel="Cycle (input k of the 12-step window)",
             ylabel="squared error", title="Temporal XOR: error predicting the next bit (cf. Fig. 3)")
    for k in range(2, CYCLE + 1, 3):
        axes.axvline(k, color="tab:green", alpha=0.2, linewidth=6)
    save_figure(figure, path)


def run(config: XorConfig, out_dir: Path | None = None, progress: bool = True) -> ExperimentResult:
    model = config.network(1, 1)
    stream = temporal_xor(config.num_bits, seed=config.seed)
    losses = train_on_stream(model, stream.unsqueeze(1), torch.roll(stream, -1).unsqueeze(1), config, "xor", progress)

    errors = error_by_cycle(model, config).tolist()
    predictable = sum(errors[1::3]) / 4  # cycles 2, 5, 8, 11
    unpredictable = sum(errors[0::3] + errors[2::3]) / 8
    figures = []
    if out_dir is not None:
        plot(errors, out_dir / "xor.png")
        figures.append("xor.png")
    verdict = "yes" if predictable < 0.5 * unpredictable else "NO"
    return ExperimentResult(
        name="xor",
        title="Experiment 1: temporal XOR",
        summary=(f"{sawtooth_table(errors)}\nmean error predicting the XOR bit {predictable:.3f}, "
                 f"the random bits {unpredictable:.3f} -> period-3 sawtooth: {verdict}\n{LEVEL_NOTE}"),
        numbers={"error_by_cycle": errors, "rms_by_cycle": [e**0.5 for e in errors],
                 "predictable_error": predictable, "unpredictable_error": unpredictable,
                 "final_training_loss": losses[-1] if losses else None},
        checks=[Check("period-3 sawtooth: error low before every XOR bit",
                      "minima ~0.16-0.18 at cycles 2, 5, 8, 11; maxima ~0.28-0.34",
                      "XOR-bit error < 0.5 x random-bit error", f"{predictable:.3f} vs {unpredictable:.3f}",
                      predictable < 0.5 * unpredictable)],
        figures=figures,
    )
