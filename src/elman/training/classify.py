"""Training a sequence classifier: data -> tensors once -> AdamW epochs -> best checkpoint, metrics, plots.

Selection uses the validation split only (macro-F1 by default); the test split is scored once, at the
end, with the selected weights.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from elman.checkpoint import load_checkpoint, save_checkpoint
from elman.data.batches import trim
from elman.data.classification import PreparedData, Split, epoch_batches, prepare
from elman.data.reader import LabelledTexts
from elman.errors import UsageError, refused_as_usage
from elman.files import atomic_write_text
from elman.metrics import classification_metrics
from elman.models.classifier import ClassifierConfig, SequenceClassifier, batched_logits, ensemble
from elman.models.language_model import log_frequencies
from elman.options import common, option
from elman.training.loop import Phase, Progress, Run, Tally, open_run
from elman.training.ngram_fit import L2_PATH, fit_ngram_bag, freeze
from elman.training.optimisation import Optimisation
from elman.training.plots import plot_confusion, plot_curves
from elman.training.pool_fit import fit_decision_bias, fit_pool
from elman.training.processes import join_processes
from elman.training.schedule import warmup_cosine

CLASS_WEIGHTINGS = ("none", "sqrt", "balanced")
FIT_SHARE = 0.25  # of a time budget, the most the n-gram member's fit may take (docs/measurements.md)


@dataclass
class TrainConfig:
    epochs: int = common("epochs", 40)
    batch_size: int = common("batch_size", 64)
    learning_rate: float = common("learning_rate", 2e-3)
    weight_decay: float = common("weight_decay", 0.05)
    warmup_fraction: float = 0.05  # of all steps, linear warm-up before the cosine decay
    clip_norm: float = 1.0
    label_smoothing: float = option(0.0, "of the cross-entropy's target", type=float)
    # Unweighted RNNs beside a sqrt-weighted n-gram member: accuracy, with the small classes' recall
    # (docs/measurements.md, "Class weighting")
    class_weighting: str = option("none", "loss weight per class of the Elman RNN members: none, sqrt "
                                  "(1/sqrt(frequency)) or balanced (1/frequency)", choices=CLASS_WEIGHTINGS)
    bag_class_weighting: str = option("sqrt", "loss weight per class of the n-gram member's fit",
                                      choices=CLASS_WEIGHTINGS)
    # the loss: macro-F1's maximum on a few thousand rows picks noise (docs/measurements.md, "Selection by loss")
    select_by: str = option("loss", "the validation score that picks the best epoch", choices=("macro_f1", "loss"))
    patience: int = common("patience", 12)  # (docs/measurements.md, "Selection by loss")
    time_budget: float | None = common("time_budget", None)  # the schedule then runs on time
    max_length: int = common("max_length", 32)
    seed: int = common("seed", 0)
    threads: int | None = common("threads", None)
    precision: str = common("precision", "fp32")
    checkpoint_every: int = common("checkpoint_every", 200)
    # (docs/measurements.md, "The decision bias")
    decision_bias: bool = option(True, "keep the pool's probabilities as fitted (calibrated), its most probable "
                                 "class the decision, instead of biasing them toward the small classes as far "
                                 "as the expected accuracy + macro-F1 on validation want")
    # a fifth more rows to learn from (docs/measurements.md, "The refit")
    refit: bool = option(True, "keep the model selected on validation instead of training the final one afresh "
                         "on train + val")


def curves_caption(metrics: dict) -> str:
    """What curves.png shows, against the model that was saved."""
    shown = f"the selection run: {metrics['epochs_run']} epochs, model of epoch {metrics['selected_epoch']} selected"
    if "refit" not in metrics:
        return f"{shown}; that model is the one saved"
    refit = metrics["refit"]
    return (f"{shown}; the saved model was then trained afresh on train + val for {refit['epochs']:g} epochs "
            "(no validation curve: val is in its training data)")


def class_weights(targets: torch.Tensor, num_classes: int, scheme: str) -> torch.Tensor | None:
    if scheme not in CLASS_WEIGHTINGS:
        raise UsageError(f"class_weighting must be one of {CLASS_WEIGHTINGS}, got {scheme!r}")
    if scheme == "none":
        return None
    counts = torch.bincount(targets, minlength=num_classes).double().clamp(min=1)
    weights = counts.rsqrt() if scheme == "sqrt" else counts.reciprocal()
    return (weights / (weights * counts).sum() * counts.sum()).float()  # mean weight per example is 1


def batch_loss(network: nn.Module, batch: Split, loss_function: nn.CrossEntropyLoss,
               ) -> tuple[torch.Tensor, float, tuple[torch.Tensor, torch.Tensor]]:
    """(summed loss, what its mean divides by: the summed class weights of the targets, times the number of
    recurrent members, and (the members' logits (M, B, C), the loss's classification part), both detached)
    of one batch.

    Every recurrent member is trained on its own loss (the loss is their mean), not on the ensemble's:
    members fitted jointly would share their mistakes. A member's loss per row is its classification loss
    plus its language-model loss (``lm_loss_weight``). The generative member's loss is its language-model loss
    under the true class; the n-gram member, fitted before, takes no part."""
    targets, lengths = batch.targets, batch.lengths
    member_logits, lm_loss = network(trim(batch.ids, lengths), lengths, lm_loss=True, targets=targets)
    recurrent = getattr(network, "module", network).config.members  # the first ones; the n-gram bag is last
    if recurrent == 1:
        loss = loss_function(member_logits[0], targets)
    else:
        loss = loss_function(member_logits[:recurrent].flatten(0, 1), targets.repeat(recurrent))
    weights = loss_function.weight
    divisor = float(weights[targets].sum()) if weights is not None else float(targets.numel())
    return loss + lm_loss, divisor * recurrent, (member_logits.detach(), loss.detach())


def selection_score(logits: torch.Tensor, targets: torch.Tensor, labels: list[str], config: TrainConfig) -> float:
    """What selects checkpoints on the validation split, higher is better: macro-F1, or minus the loss."""
    if config.select_by == "macro_f1":
        return classification_metrics(logits.argmax(1), targets, labels)["macro_f1"]
    return -float(nn.functional.cross_entropy(logits, targets))


class ClassifierTask:
    """The loop's view of classification over one split: length-bucketed batches, every recurrent member's
    loss, and, given a ``validation`` split (selection), the pool's score on it; without one (the refit), an
    epoch's end is only logged."""

    unit = "texts"

    def __init__(self, model: SequenceClassifier, prepared: PreparedData, config: TrainConfig, run: Run,
                 split: Split, validation: Split | None, checkpoint_config: dict):
        self.model, self.prepared, self.config, self.run = model, prepared, config, run
        self.split, self.validation, self.checkpoint_config = split, validation, checkpoint_config
        weights = class_weights(split.targets, len(prepared.labels), config.class_weighting)
        self.loss_function = nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing,
                                                 reduction="sum")
        self.val_metrics: dict | None = None

    def epoch(self, generator: torch.Generator) -> list[Split]:
        return epoch_batches(self.split, self.config.batch_size, generator)

    def step(self, optimisation: Optimisation, batch: Split, learning_rate: float) -> Tally:
        processes = optimisation.processes
        mine = Split(*(processes.rows(t) for t in (batch.ids, batch.lengths, batch.targets)))
        _, divisor, (member_logits, classification_loss) = optimisation.step(learning_rate, batch_loss, mine,
                                                                             self.loss_function)
        # the training accuracy pools the members a step scores: the recurrent ones and the bag (see batch_loss)
        predicted = ensemble(member_logits, self.model.member_weights[: member_logits.shape[0]]).argmax(1)
        correct, classification_loss = processes.total(
            torch.tensor([float((predicted == mine.targets).sum()), float(classification_loss)])).tolist()
        # the training loss shown and logged leaves out the LM loss
        return Tally(items=len(batch), loss=classification_loss, divisor=divisor, correct=int(correct))

    def validate(self, progress: Progress, seconds: float) -> tuple[dict, float | None]:
        since = progress.since
        if self.validation is None:
            return {"refit_epoch": progress.epoch, "train_loss": since.mean_loss,
                    "texts_per_second": since.per_second, "seconds": seconds}, None
        val = self.validation
        val_logits = fit_pool(self.model, val, generative=False)  # the generative member joins after selection
        self.val_metrics = classification_metrics(val_logits.argmax(1), val.targets, self.prepared.labels)
        record = {"epoch": progress.epoch, "train_loss": since.mean_loss,
                  "train_accuracy": since.correct / max(since.items, 1),
                  "val_loss": float(nn.functional.cross_entropy(val_logits, val.targets)),
                  "val_accuracy": self.val_metrics["accuracy"], "val_macro_f1": self.val_metrics["macro_f1"],
                  "texts_per_second": since.per_second, "seconds": seconds}
        return record, selection_score(val_logits, val.targets, self.prepared.labels, self.config)

    def improved(self, progress: Progress) -> None:
        progress.records["selected"] = {"epoch": progress.epoch, "val": self.val_metrics}
        if self.run.processes.main:
            save_checkpoint(self.run.out_dir, self.model, self.prepared.vocabulary,
                            {**self.checkpoint_config, "epoch": progress.epoch})

    def carried(self) -> None:
        return None

    def shown(self, since: Tally, record: dict | None) -> dict:
        shown = {"loss": f"{since.mean_loss:.3f}", "texts_s": f"{since.per_second:.0f}"}
        if record is not None and "val_accuracy" in record:
            shown.update(val_acc=f"{record['val_accuracy']:.3f}", val_f1=f"{record['val_macro_f1']:.3f}")
        return shown


def phase(name: str, split: Split, epochs: int, time_budget: float | None, config: TrainConfig) -> Phase:
    return Phase(name, epochs, math.ceil(len(split) / config.batch_size), time_budget,
                 lambda done: warmup_cosine(done, config.learning_rate, config.warmup_fraction), config.patience)


def fit_bag(run: Run, model: SequenceClassifier, labels: list[str], config: TrainConfig, split: Split,
            validation: Split | None, penalties: tuple[float, ...]) -> dict:
    """Fit the n-gram member on ``split`` (choosing its penalty on ``validation``, if given), in at most
    ``FIT_SHARE`` of the time budget."""
    started, processes = time.monotonic(), run.processes

    def time_is_up() -> bool:
        return config.time_budget is not None and \
            processes.agreed(time.monotonic() - started) > FIT_SHARE * config.time_budget

    fit = fit_ngram_bag(model.bag, (split.ids, split.targets),
                        None if validation is None else (validation.ids, validation.targets),
                        class_weights(split.targets, len(labels), config.bag_class_weighting),
                        lambda logits, targets: selection_score(logits, targets, labels, config),
                        time_is_up, penalties)
    fit["seconds"] = processes.agreed(fit["seconds"])  # what is left of the budget: alike everywhere
    run.log(f"n-gram member fitted on {len(split)} rows in {fit['seconds']:.1f} s: l2 {fit['l2']:g}"
            + ("" if validation is None else f", validation score ({config.select_by}) {fit['val_score']:.4f}"))
    return fit


def count_ngrams(run: Run, model: SequenceClassifier, split: Split) -> dict:
    """Fit the n-gram generative member on ``split``: counting, a fraction of a second on surnames.csv."""
    started = time.monotonic()
    model.ngram_generative.fit(split.ids, split.lengths, split.targets)
    count = {"seconds": run.processes.agreed(time.monotonic() - started),
             "ngrams": len(model.ngram_generative.ngrams.ngram_keys)}
    run.log(f"n-gram generative member counted on {len(split)} rows in {count['seconds']:.2f} s: "
            f"{count['ngrams']} n-grams")
    return count


def select(run: Run, model: SequenceClassifier, prepared: PreparedData, config: TrainConfig,
           checkpoint_config: dict) -> None:
    """Selection: the n-gram members fitted, the recurrent members trained on train and validated after every
    epoch; ends with the best epoch's weights in ``model``."""
    p, records = run.progress, run.progress.records
    train, val = prepared.splits["train"], prepared.splits["val"]
    if model.bag is not None and p.step == 0:
        records["bag_fit"] = fit_bag(run, model, prepared.labels, config, train, val, L2_PATH)
    if model.ngram_generative is not None and p.step == 0:
        records["ngram_count"] = count_ngrams(run, model, train)
    fitting = sum(records[name]["seconds"] for name in ("bag_fit", "ngram_count") if name in records)
    # the fit's time comes out of the budget; the steps' schedule (warm-up, cosine) spans what is left,
    # shared with the refit in proportion to the rows each phase trains on
    share = len(train) / (2 * len(train) + len(val)) if config.refit else 1.0
    budget = None if config.time_budget is None else max(config.time_budget - fitting, 0.0) * share
    run.train(ClassifierTask(model, prepared, config, run, train, val, checkpoint_config),
              phase("select", train, config.epochs, budget, config))
    run.log(f"selection stopped by {p.stopped or 'epochs'} after {fitting + p.elapsed:.1f} s; "
            f"best epoch {records['selected']['epoch']}")
    records["selection"] = {"stopped_by": p.stopped or "epochs", "seconds": fitting + p.elapsed,
                            "epochs_run": len(p.history), **records.pop("selected")}
    model.load_state_dict(run.state.best_weights)  # with the pool weights fitted for it
    started = time.monotonic()
    if model.generative is not None:
        join_generative(run, model, prepared)
    if config.decision_bias:
        bias_decisions(run, model, prepared)
    if model.generative is not None or config.decision_bias:  # the selected checkpoint: the whole pool's
        if run.processes.main:
            save_checkpoint(run.out_dir, model, prepared.vocabulary,
                            {**checkpoint_config, "epoch": records["selection"]["epoch"]})
        records["selection"]["seconds"] += run.processes.agreed(time.monotonic() - started)  # out of the budget


def join_generative(run: Run, model: SequenceClassifier, prepared: PreparedData) -> None:
    """The generative member joins the selected model's pool: every member's weight and its prior weight
    fitted on the validation split, once. Scoring it reads every row once per class, 0.6 of a training epoch's
    time on surnames.csv, so the epochs are chosen by the other members' pool (docs/measurements.md, "The
    generative member"). The selection's validation metrics are then the whole pool's."""
    records, val = run.progress.records, prepared.splits["val"]
    metrics = classification_metrics(fit_pool(model, val, generative=True).argmax(1), val.targets, prepared.labels)
    records["selection"]["val"] = metrics
    run.log(f"generative member joined the pool: weights {[round(w, 3) for w in model.member_weights.tolist()]}, "
            f"prior weight {float(model.generative.prior_weight):.3f}; validation accuracy {metrics['accuracy']:.4f} "
            f"macro-F1 {metrics['macro_f1']:.4f}")


def bias_decisions(run: Run, model: SequenceClassifier, prepared: PreparedData) -> None:
    """The selected pool's decisions are biased toward what its probabilities on the validation split expect to
    score the highest accuracy + macro-F1 (``fit_decision_bias``); the selection's validation metrics, the
    unbiased pool's until then, are then the biased pool's."""
    records = run.progress.records
    fit = fit_decision_bias(model, prepared.splits["val"], prepared.labels)
    metrics, unbiased = fit.pop("metrics"), records["selection"]["val"]
    records["selection"]["val"] = metrics
    records["selection"]["decision_bias"] = {**fit, "unbiased_val": {name: unbiased[name] for name in
                                                                      ("accuracy", "macro_f1")}}
    run.log(f"decisions biased per class, {fit['bias']}: expected accuracy + macro-F1 "
            f"{fit['unbiased_expected_score']:.4f} -> {fit['expected_score']:.4f}; validation accuracy "
            f"{unbiased['accuracy']:.4f} -> {metrics['accuracy']:.4f}, macro-F1 {unbiased['macro_f1']:.4f} -> "
            f"{metrics['macro_f1']:.4f}")


def begin_refit(run: Run, model: SequenceClassifier, model_config: ClassifierConfig, prepared: PreparedData,
                config: TrainConfig, rows: Split) -> None:
    """The final model starts anew, from its own seed, keeping what selection fitted for the pool."""
    p, state = run.progress, run.state
    p.phase, p.epoch, p.batch, p.first_step, p.elapsed, p.stopped = "refit", 1, 0, p.step, 0.0, None
    state.best_weights = None
    torch.manual_seed(config.seed + 1)
    model.load_state_dict({**SequenceClassifier(model_config).state_dict(), **model.pool_state()})
    run.optimisation.restart()
    state.generator.manual_seed(config.seed + 1)
    state.epoch_start = state.generator.get_state()
    if model.bag is not None:
        p.records["refit_bag_fit"] = fit_bag(run, model, prepared.labels, config, rows, None,
                                             (p.records["bag_fit"]["l2"],))
    if model.ngram_generative is not None:
        p.records["refit_ngram_count"] = count_ngrams(run, model, rows)
    run.log(f"final model: trained afresh on train + val ({len(rows)} rows) for "
            f"{p.records['selection']['epochs_run']} epochs")


def refit(run: Run, model: SequenceClassifier, prepared: PreparedData, config: TrainConfig, rows: Split,
          checkpoint_config: dict) -> None:
    """The refit's steps on train + val, for as many epochs as selection ran; a refit cut short by Ctrl-C is
    not annealed, and the selected model (the checkpoint of selection) stays the final one."""
    p, records = run.progress, run.progress.records
    epochs = records["selection"]["epochs_run"]
    fitting = sum(records[name]["seconds"] for name in ("refit_bag_fit", "refit_ngram_count") if name in records)
    used = records["selection"]["seconds"] + fitting
    budget = None if config.time_budget is None else max(config.time_budget - used, 0.0)
    run.train(ClassifierTask(model, prepared, config, run, rows, None, checkpoint_config),
              phase("refit", rows, epochs, budget, config))
    steps = p.step - p.first_step
    records["refit"] = {"rows": len(rows), "steps": steps,
                        "epochs": round(steps / math.ceil(len(rows) / config.batch_size), 2),
                        "stopped_by": p.stopped or "epochs",
                        "seconds": p.elapsed + fitting}
    if p.stopped == "interrupt":
        model.load_state_dict(load_checkpoint(run.out_dir)[1])
        run.log("refit interrupted: the selected model (the checkpoint written during selection) is the final one")
    elif run.processes.main:
        save_checkpoint(run.out_dir, model, prepared.vocabulary, {**checkpoint_config, "epoch": epochs, "refit": True})


def train_classifier(
    data: LabelledTexts,
    out_dir: str | Path,
    model_options: dict | None = None,
    config: TrainConfig | None = None,
    progress: bool = True,
    resume: bool = False,
) -> dict:
    """Train, select by validation, score the test split, write all outputs.

    Two phases. Selection: the n-gram members are fitted and the recurrent members trained on the train split,
    epoch by epoch, validated after each; the best epoch's weights are kept (early stopping). Refit (unless
    ``config.refit`` is off): the final model is trained afresh on train + val with what selection chose:
    the n-gram member's penalty and the pool weights, for as many epochs as selection ran, so that its
    schedule anneals as selection's did. (Not to the best epoch: once the schedule's rate is low the
    validation loss is flat, and which of those epochs scores best is noise; on surnames.csv the best came
    12 epochs before the end, and a refit of that length left a third of the time unused.) The validation
    metrics reported are the selected model's (the final one has seen those rows); the test metrics the
    final model's.

    Writes into ``out_dir``: the checkpoint (model.safetensors, vocab.json, config.json), metrics.json,
    curves.png, confusion.png, train.log, and every ``checkpoint_every`` steps the training state under
    ``resume/``. With ``resume``, continues from the newest intact training state in ``out_dir`` exactly
    as the interrupted run would have gone on. Ctrl-C (one process) ends the run as its time budget would:
    in selection, the best model so far is the final one (no refit); in the refit, the refit cut short is
    dropped for the selected model; either way the outputs are written. Returns the contents of metrics.json.
    """
    config = config or TrainConfig()
    if config.select_by not in ("macro_f1", "loss"):
        raise UsageError(f"select_by must be 'macro_f1' or 'loss', got {config.select_by!r}")
    for name in ("class_weighting", "bag_class_weighting"):
        if getattr(config, name) not in CLASS_WEIGHTINGS:
            raise UsageError(f"{name} must be one of {CLASS_WEIGHTINGS}, got {getattr(config, name)!r}")
    prepared = prepare(data, config.max_length, config.seed)  # refuses unusable data before anything is written
    torch.manual_seed(config.seed)
    with refused_as_usage("model options"):  # before anything is written
        model_config = ClassifierConfig(vocab_size=len(prepared.vocabulary), num_classes=len(prepared.labels),
                                        **(model_options or {}))
        model = SequenceClassifier(model_config)
    if model.bag is not None:
        freeze(model.bag)  # fitted as a logistic regression when a phase starts
    counts = torch.bincount(prepared.splits["train"].targets, minlength=len(prepared.labels))
    for member in model.bayes_members:
        member.log_prior.copy_(log_frequencies(counts))
    checkpoint_config = {"task": "classify", "model": asdict(model_config), "labels": prepared.labels,
                         "max_length": config.max_length, "training": asdict(config), "data": data.path}
    about_data = (f"{data.path}: {len(data)} rows ({data.skipped_empty} empty skipped); "
                  + ", ".join(f"{name} {len(split)}" for name, split in prepared.splits.items())
                  + f"; {len(prepared.labels)} labels; vocabulary {len(prepared.vocabulary)}")
    with open_run(Path(out_dir), model, model_config, config, join_processes(), resume, about_data, progress,
                  phase="select") as run:
        p = run.progress
        train_and_val = prepared.splits["train"].joined(prepared.splits["val"])  # what the final model trains on
        if p.phase == "select":
            select(run, model, prepared, config, checkpoint_config)
            if config.refit and p.stopped == "interrupt":
                run.log("no refit: the run was interrupted, the selected model is the final one")
            elif config.refit:
                begin_refit(run, model, model_config, prepared, config, train_and_val)
        if p.phase == "refit":
            refit(run, model, prepared, config, train_and_val, checkpoint_config)
        return write_outputs(run, model, prepared)


def write_outputs(run: Run, model: SequenceClassifier, prepared: PreparedData) -> dict:
    """The final model scored on the test split; metrics.json, curves.png and confusion.png written. Returns
    the metrics."""
    p, records = run.progress, run.progress.records
    seconds = records["selection"]["seconds"] + records.get("refit", {}).get("seconds", 0.0)
    run.log(f"stopped after {seconds:.1f} s")
    metrics = {"stopped_by": records["selection"]["stopped_by"], "epochs_run": len(p.history),
               "selected_epoch": records["selection"]["epoch"], "training_seconds": seconds, "history": p.history}
    fits = {"ngram_member_fit": "bag_fit", "ngram_generative_count": "ngram_count"}
    metrics.update({name: records[record] for name, record in fits.items() if record in records})
    if "refit" in records:
        metrics["refit"] = {**records["refit"], **{name: records[f"refit_{record}"] for name, record in fits.items()
                                                   if f"refit_{record}" in records}}
    metrics["val"] = records["selection"]["val"]  # the selection model's: the final one may have trained on val
    if "decision_bias" in records["selection"]:
        metrics["decision_bias"] = records["selection"]["decision_bias"]
    if "test" in prepared.splits:
        test = prepared.splits["test"]
        metrics["test"] = classification_metrics(batched_logits(model, test.ids, test.lengths).argmax(1),
                                                 test.targets, prepared.labels)
    if run.processes.main:
        atomic_write_text(run.out_dir / "metrics.json", json.dumps(metrics, indent=2))
        plot_curves(p.history, run.out_dir / "curves.png", curves_caption(metrics))
        shown = "test" if "test" in metrics else "val"
        plot_confusion(metrics[shown]["confusion_matrix"], prepared.labels, run.out_dir / "confusion.png", shown)
    run.log(" ".join(f"{name} accuracy {metrics[name]['accuracy']:.4f} macro-F1 {metrics[name]['macro_f1']:.4f}"
                     for name in ("val", "test") if name in metrics))
    return metrics
