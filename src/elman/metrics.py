"""How good a model is: classification metrics (accuracy, macro-F1, per-class precision/recall/F1/support,
confusion matrix) and a language model's loss in the usual units."""

from __future__ import annotations

import math

import torch


def loss_report(loss: float) -> dict:
    """Cross-entropy in nats per character, with bits per character and perplexity."""
    return {"loss": loss, "bits_per_char": loss / math.log(2), "perplexity": math.exp(loss)}


def confusion_matrix(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64: row = true class, column = predicted class."""
    flat = targets.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def classification_metrics(predictions: torch.Tensor, targets: torch.Tensor, labels: list[str]) -> dict:
    """Metrics of predicted vs true class indices (N,). Macro-F1 averages over classes present in
    ``targets``, so that a split without some class is not scored as a zero for it."""
    confusion = confusion_matrix(predictions, targets, len(labels)).double()
    true_positive = confusion.diag()
    support = confusion.sum(1)
    predicted = confusion.sum(0)
    precision = torch.where(predicted > 0, true_positive / predicted.clamp(min=1), 0.0)
    recall = torch.where(support > 0, true_positive / support.clamp(min=1), 0.0)
    denominator = precision + recall
    f1 = torch.where(denominator > 0, 2 * precision * recall / denominator.clamp(min=1e-12), 0.0)
    present = support > 0
    return {
        "n": int(targets.numel()),
        "accuracy": float(true_positive.sum() / max(targets.numel(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i])}
            for i, label in enumerate(labels)
        },
        "confusion_matrix": confusion.long().tolist(),
        "labels": list(labels),
    }
