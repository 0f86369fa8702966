"""Training a sequence classifier: data -> tensors once -> AdamW epochs -> best checkpoint, metrics, plots.

Selection uses the validation split only (macro-F1 by default); the test split is scored once, at the
end, with the selected weights.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from elman.data.batches import length_bucketed_batches, trim
from elman.data.reader import DataError, LabelledTexts
from elman.data.splits import stratified_split
from elman.data.vocabulary import Vocabulary, vectorize
from elman.files import atomic_write_text
from elman.models.classifier import ClassifierConfig, SequenceClassifier, batched_logits
from elman.training.checkpoint import save_checkpoint
from elman.training.metrics import classification_metrics
from elman.training.plots import plot_confusion, plot_curves
from elman.training.schedule import warmup_cosine

CLASS_WEIGHTINGS = ("none", "sqrt", "balanced")


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05  # of all steps, linear warm-up before the cosine decay
    clip_norm: float = 1.0
    label_smoothing: float = 0.0
    class_weighting: str = "sqrt"  # loss weight per class: 1, 1/sqrt(frequency) or 1/frequency (normalised)
    select_by: str = "macro_f1"  # validation metric for early stopping and the kept checkpoint: or "loss"
    patience: int = 8  # epochs without improvement before stopping
    time_budget: float | None = None  # seconds; training stops cleanly when it is spent
    max_length: int = 32  # characters kept per text (longer texts are cut)
    seed: int = 0  # weights, dropout, batch order (and the split, for files without one)
    threads: int | None = None  # torch threads; None keeps torch's default


@dataclass
class Split:
    ids: torch.Tensor  # (N, T) int64, 0 = padding
    lengths: torch.Tensor  # (N,)
    targets: torch.Tensor  # (N,) class indices

    def __len__(self) -> int:
        return self.targets.shape[0]


@dataclass
class PreparedData:
    vocabulary: Vocabulary
    labels: list[str]
    splits: dict[str, Split] = field(default_factory=dict)


def prepare(data: LabelledTexts, max_length: int, seed: int) -> PreparedData:
    """Split (stratified and seeded, if the file has no split column), build the vocabulary and the
    label list from the training rows, and vectorize every split once."""
    if data.labels is None:
        raise DataError(f"{data.path}: no label column; training a classifier needs labels")
    splits = data.splits or stratified_split(data.labels, seed=seed)
    rows = {name: [i for i, s in enumerate(splits) if s == name] for name in ("train", "val", "test")}
    if not rows["train"] or not rows["val"]:
        raise DataError(f"{data.path}: training needs rows in both the train and the val split "
                        f"(found {len(rows['train'])} and {len(rows['val'])})")
    train_texts = [data.texts[i] for i in rows["train"]]
    labels = sorted({data.labels[i] for i in rows["train"]})
    unseen = sorted({data.labels[i] for name in ("val", "test") for i in rows[name]} - set(labels))
    if unseen:
        raise DataError(f"{data.path}: labels {unseen} occur in val/test but never in train")
    if len(labels) < 2:
        raise DataError(f"{data.path}: the training rows have a single label {labels}; need at least two")
    vocabulary = Vocabulary.from_texts(train_texts)
    index = {label: i for i, label in enumerate(labels)}
    prepared = PreparedData(vocabulary, labels)
    for name, chosen in rows.items():
        if chosen:
            ids, lengths = vectorize([data.texts[i] for i in chosen], vocabulary, max_length)
            targets = torch.tensor([index[data.labels[i]] for i in chosen])
            prepared.splits[name] = Split(ids, lengths, targets)
    return prepared


def class_weights(targets: torch.Tensor, num_classes: int, scheme: str) -> torch.Tensor | None:
    if scheme not in CLASS_WEIGHTINGS:
        raise ValueError(f"class_weighting must be one of {CLASS_WEIGHTINGS}, got {scheme!r}")
    if scheme == "none":
        return None
    counts = torch.bincount(targets, minlength=num_classes).double().clamp(min=1)
    weights = counts.rsqrt() if scheme == "sqrt" else counts.reciprocal()
    return (weights / (weights * counts).sum() * counts.sum()).float()  # mean weight per example is 1


@dataclass
class EpochStats:
    seen: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seconds: float = 0.0


def train_one_epoch(model, train: Split, optimizer, loss_function, generator, config: TrainConfig, first_step: int,
                    total_steps: int, deadline: float | None) -> tuple[EpochStats, int, bool]:
    """One pass over the training batches; stops early (returning True) once ``deadline`` has passed,
    after at least one step of the whole run."""
    model.train()
    stats, step, started = EpochStats(), first_step, time.monotonic()
    for batch in length_bucketed_batches(train.lengths, config.batch_size, generator):
        if deadline is not None and step > 0 and time.monotonic() > deadline:
            stats.seconds = time.monotonic() - started
            return stats, step, True
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step / total_steps, config.learning_rate, config.warmup_fraction)
        logits = model(trim(train.ids[batch], train.lengths[batch]), train.lengths[batch])
        loss = loss_function(logits, train.targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm, foreach=True)
        optimizer.step()
        step += 1
        stats.seen += batch.numel()
        stats.loss_sum += loss.item() * batch.numel()
        stats.correct += int((logits.argmax(1) == train.targets[batch]).sum())
    stats.seconds = time.monotonic() - started
    return stats, step, False


def train_classifier(
    data: LabelledTexts,
    out_dir: str | Path,
    model_options: dict | None = None,
    config: TrainConfig | None = None,
    progress: bool = True,
) -> dict:
    """Train, keep the best checkpoint by validation, score the test split, write all outputs.

    Writes into ``out_dir``: the checkpoint (model.safetensors, vocab.json, config.json), metrics.json,
    curves.png, confusion.png and train.log. Returns the contents of metrics.json.
    """
    config = config or TrainConfig()
    if config.select_by not in ("macro_f1", "loss"):
        raise ValueError(f"select_by must be 'macro_f1' or 'loss', got {config.select_by!r}")
    if config.threads:
        torch.set_num_threads(config.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    prepared = prepare(data, config.max_length, config.seed)
    train, val = prepared.splits["train"], prepared.splits["val"]
    model_config = ClassifierConfig(vocab_size=len(prepared.vocabulary), num_classes=len(prepared.labels),
                                    **(model_options or {}))
    model = SequenceClassifier(model_config)
    weights = class_weights(train.targets, len(prepared.labels), config.class_weighting)
    loss_function = nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                  fused=True)  # one kernel for all parameters: the per-parameter loop costs more
    generator = torch.Generator().manual_seed(config.seed)
    total_steps = math.ceil(len(train) / config.batch_size) * config.epochs
    checkpoint_config = {"task": "classify", "model": asdict(model_config), "labels": prepared.labels,
                         "max_length": config.max_length, "training": asdict(config), "data": data.path}

    with open(out_dir / "train.log", "w", encoding="utf-8") as log_file:
        def log(message: str) -> None:
            log_file.write(message + "\n")
            log_file.flush()

        log(f"data {data.path}: {len(data)} rows ({data.skipped_empty} empty skipped); "
            + ", ".join(f"{name} {len(split)}" for name, split in prepared.splits.items())
            + f"; {len(prepared.labels)} labels; vocabulary {len(prepared.vocabulary)}")
        log(f"model {asdict(model_config)}; {sum(p.numel() for p in model.parameters())} parameters")
        log(f"training {asdict(config)}")

        history, best, best_state, stale, step, out_of_time = [], None, None, 0, 0, False
        start = time.monotonic()
        deadline = None if config.time_budget is None else start + config.time_budget
        bar = tqdm(range(config.epochs), desc="train", unit="epoch", disable=not progress)
        for epoch in bar:
            stats, step, out_of_time = train_one_epoch(model, train, optimizer, loss_function, generator, config,
                                                       step, total_steps, deadline)
            if stats.seen == 0:
                break
            val_logits = batched_logits(model, val.ids, val.lengths)
            val_loss = float(nn.functional.cross_entropy(val_logits, val.targets))
            val_metrics = classification_metrics(val_logits.argmax(1), val.targets, prepared.labels)
            record = {"epoch": epoch + 1, "train_loss": stats.loss_sum / stats.seen,
                      "train_accuracy": stats.correct / stats.seen, "val_loss": val_loss,
                      "val_accuracy": val_metrics["accuracy"], "val_macro_f1": val_metrics["macro_f1"],
                      "texts_per_second": stats.seen / stats.seconds, "seconds": time.monotonic() - start}
            history.append(record)
            score = val_metrics["macro_f1"] if config.select_by == "macro_f1" else -val_loss
            improved = best is None or score > best
            if improved:
                best, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
                save_checkpoint(out_dir, model, prepared.vocabulary, {**checkpoint_config, "epoch": epoch + 1})
            else:
                stale += 1
            log(json.dumps(record) + ("  (best)" if improved else ""))
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", val_acc=f"{record['val_accuracy']:.3f}",
                            val_f1=f"{record['val_macro_f1']:.3f}", texts_s=f"{record['texts_per_second']:.0f}")
            if out_of_time or stale >= config.patience:
                break
        bar.close()
        stopped = "time budget" if out_of_time else "early stopping" if stale >= config.patience else "epochs"
        log(f"stopped by {stopped} after {time.monotonic() - start:.1f} s")

        model.load_state_dict(best_state)
        metrics = {"stopped_by": stopped, "epochs_run": len(history), "training_seconds": time.monotonic() - start,
                   "history": history}
        for name, split in prepared.splits.items():
            if name != "train":
                predictions = batched_logits(model, split.ids, split.lengths).argmax(1)
                metrics[name] = classification_metrics(predictions, split.targets, prepared.labels)
        atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
        plot_curves(history, out_dir / "curves.png")
        shown = "test" if "test" in metrics else "val"
        plot_confusion(metrics[shown]["confusion_matrix"], prepared.labels, out_dir / "confusion.png", shown)
        log(" ".join(f"{name} accuracy {metrics[name]['accuracy']:.4f} macro-F1 {metrics[name]['macro_f1']:.4f}"
                     for name in ("val", "test") if name in metrics))
    return metrics
