"""Training figures: loss/accuracy curves per epoch, the confusion matrix, language-model loss curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from elman.plots import new_figure, save_figure


def plot_curves(history: list[dict], path: Path, caption: str) -> None:
    """The selection run's epochs; ``caption`` says under the figure which model they show."""
    epochs = [h["epoch"] for h in history]
    figure, (loss_axes, score_axes) = new_figure(1, 2, figsize=(10, 4.2))
    figure.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=8, wrap=True)
    figure.subplots_adjust(bottom=0.22)
    loss_axes.plot(epochs, [h["train_loss"] for h in history], label="train (classification loss only)")
    loss_axes.plot(epochs, [h["val_loss"] for h in history], label="validation")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    score_axes.plot(epochs, [h["train_accuracy"] for h in history], label="train accuracy")
    score_axes.plot(epochs, [h["val_accuracy"] for h in history], label="validation accuracy")
    score_axes.plot(epochs, [h["val_macro_f1"] for h in history], label="validation macro-F1")
    score_axes.set(xlabel="epoch", ylim=(0, 1), title="accuracy and macro-F1")
    for axes in (loss_axes, score_axes):
        axes.legend()
        axes.grid(alpha=0.3)
    save_figure(figure, path)


def plot_confusion(confusion: list[list[int]], labels: list[str], path: Path, split: str) -> None:
    """Rows: true label; columns: predicted. Colour is the row-normalised rate, numbers are counts."""
    counts = np.array(confusion)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(5, 0.45 * len(labels) + 2)
    figure, axes = new_figure(figsize=(size + 1, size))
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    for (row, column), count in np.ndenumerate(counts):
        if count:
            axes.text(column, row, str(count), ha="center", va="center", fontsize=7,
                      color="white" if rates[row, column] > 0.5 else "black")
    axes.set(xlabel="predicted", ylabel="true", title=f"confusion matrix ({split} split)")
    figure.colorbar(image, ax=axes, fraction=0.046)
    save_figure(figure, path)


def plot_language_curves(history: list[dict], path: Path) -> None:
    """Training and validation loss against wall-clock time, in nats and bits per character."""
    seconds = [h["seconds"] for h in history]
    figure, axes = new_figure(figsize=(6.5, 4))
    axes.plot(seconds, [h["train_loss"] for h in history], marker=".", label="train (mean since last validation)")
    axes.plot(seconds, [h["val_loss"] for h in history], marker=".", label="validation")
    axes.set(xlabel="seconds", ylabel="cross-entropy (nats/char)", title="language model loss")
    bits = axes.secondary_yaxis("right", functions=(lambda nats: nats / np.log(2), lambda bits: bits * np.log(2)))
    bits.set_ylabel("bits/char")
    axes.legend()
    axes.grid(alpha=0.3)
    save_figure(figure, path)
