"""Training a sequence classifier: data -> tensors once -> AdamW epochs -> best checkpoint, metrics, plots.

Selection uses the validation split only (macro-F1 by default); the test split is scored once, at the
end, with the selected weights.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from elman.checkpoint import load_checkpoint, save_checkpoint
from elman.data.batches import trim
from elman.data.classification import Split, epoch_batches, prepare
from elman.data.reader import LabelledTexts
from elman.errors import UsageError, refused_as_usage
from elman.files import atomic_write_text
from elman.metrics import classification_metrics
from elman.models.classifier import ClassifierConfig, SequenceClassifier, batched_logits, ensemble
from elman.threads import set_training_threads
from elman.training.loop import Optimisation, RunLog, RunState, ThroughputWatch, join_processes
from elman.training.ngram_fit import L2_PATH, fit_ngram_bag, freeze
from elman.training.plots import plot_confusion, plot_curves
from elman.training.resume import prepare_out_dir
from elman.training.schedule import warmup_cosine

CLASS_WEIGHTINGS = ("none", "sqrt", "balanced")
MAX_LOG_WEIGHT = 4.0  # bound of the ensemble pool's fitted log-weights (see fit_member_weights)
FIT_SHARE = 0.25  # of a time budget, the most the n-gram member's fit may take (docs/measurements.md)


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05  # of all steps, linear warm-up before the cosine decay
    clip_norm: float = 1.0
    label_smoothing: float = 0.0
    # Loss weight per class, of the recurrent members' steps and of the n-gram member's fit: "none" (1),
    # "sqrt" (1/sqrt(frequency)) or "balanced" (1/frequency), normalised to a mean of 1 per row. Unweighted
    # RNNs beside a sqrt-weighted n-gram member: accuracy, with the small classes' recall
    # (docs/measurements.md, "Class weighting")
    class_weighting: str = "none"
    bag_class_weighting: str = "sqrt"
    # Validation metric for early stopping and the kept checkpoint: "loss" or "macro_f1". The loss: macro-F1's
    # maximum on a few thousand rows picks noise (docs/measurements.md, "Selection by loss")
    select_by: str = "loss"
    patience: int = 12  # epochs without improvement before stopping (docs/measurements.md, "Selection by loss")
    time_budget: float | None = None  # seconds; the schedule then runs on time, and training stops at the budget
    max_length: int = 32  # characters kept per text (longer texts are cut)
    seed: int = 0  # weights, dropout, batch order (and the split, for files without one)
    threads: int | None = None  # torch threads; None keeps torch's default
    precision: str = "fp32"  # or "bf16" / "auto": bfloat16 GEMMs with float32 weights and states
    checkpoint_every: int = 200  # steps between training states for --resume (0: none)
    # After selection, train the final model afresh on train + val with what selection chose (epochs, the
    # n-gram member's penalty, the pool weights): a fifth more rows to learn from (docs/measurements.md, "The refit")
    refit: bool = True


def epoch_counts() -> dict:
    """What the steps of an epoch add up (texts, summed loss and its divisor, correct predictions, seconds)."""
    return {"seen": 0, "loss": 0.0, "divisor": 0.0, "correct": 0, "seconds": 0.0}






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
               ) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """(summed loss, what its mean divides by: the summed class weights of the targets, times the number of
    recurrent members; the members' logits (M, B, C), detached; the loss's classification part, detached) of
    one batch.

    Every recurrent member is trained on its own loss (the loss is their mean), not on the ensemble's:
    members fitted jointly would share their mistakes. A member's loss per row is its classification loss
    plus its language-model loss (``lm_loss_weight``). The n-gram member, fitted before, takes no part."""
    targets, lengths = batch.targets, batch.lengths
    member_logits, lm_loss = network(trim(batch.ids, lengths), lengths, lm_loss=True)
    recurrent = getattr(network, "module", network).config.members  # the first ones; the n-gram bag is last
    if recurrent == 1:
        loss = loss_function(member_logits[0], targets)
    else:
        loss = loss_function(member_logits[:recurrent].flatten(0, 1), targets.repeat(recurrent))
    weights = loss_function.weight
    divisor = float(weights[targets].sum()) if weights is not None else float(targets.numel())
    return loss + lm_loss, divisor * recurrent, member_logits.detach(), loss.detach()


def selection_score(logits: torch.Tensor, targets: torch.Tensor, labels: list[str], config: TrainConfig) -> float:
    """What selects checkpoints on the validation split, higher is better: macro-F1, or minus the loss."""
    if config.select_by == "macro_f1":
        return classification_metrics(logits.argmax(1), targets, labels)["macro_f1"]
    return -float(nn.functional.cross_entropy(logits, targets))


def fit_member_weights(member_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The ensemble's pool weights (M,) that minimise its log-loss on held-out rows (see ``ensemble``):
    member_logits (M, N, C), targets (N,). With one member this is temperature scaling.

    The log-weights have a standard normal prior (the fit is its maximum a posteriori) and stay within
    [-4, 4]: early in training members can be right yet barely confident, so that the best weights lie far
    out, and rows that the members already separate perfectly would pull them to infinity; the line search
    must not follow them there (float32 overflows) nor let a member that has hardly learnt anything count
    for much. On thousands of rows the prior hardly matters."""
    log_probs = member_logits.double().log_softmax(dim=2)
    log_weights = torch.zeros(member_logits.shape[0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_weights], max_iter=100, line_search_fn="strong_wolfe")

    def weights() -> torch.Tensor:
        return log_weights.clamp(-MAX_LOG_WEIGHT, MAX_LOG_WEIGHT).exp()

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        log_loss = nn.functional.cross_entropy(ensemble(log_probs, weights()), targets)
        loss = log_loss + log_weights.square().sum() / (2 * targets.numel())
        loss.backward()
        return loss

    optimizer.step(objective)
    return weights().detach().float()


def train_classifier(
    data: LabelledTexts,
    out_dir: str | Path,
    model_options: dict | None = None,
    config: TrainConfig | None = None,
    progress: bool = True,
    resume: bool = False,
) -> dict:
    """Train, select by validation, score the test split, write all outputs.

    Two phases. Selection: the n-gram member is fitted and the recurrent members trained on the train split,
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
    threads_note = set_training_threads(config.threads)
    prepared = prepare(data, config.max_length, config.seed)  # refuses unusable data before anything is written
    torch.manual_seed(config.seed)
    with refused_as_usage("model options"):  # before anything is written
        model_config = ClassifierConfig(vocab_size=len(prepared.vocabulary), num_classes=len(prepared.labels),
                                        **(model_options or {}))
        model = SequenceClassifier(model_config)
    processes = join_processes()
    out_dir = Path(out_dir)
    if processes.main:
        prepare_out_dir(out_dir, resume)
    train, val = prepared.splits["train"], prepared.splits["val"]
    train_and_val = train.joined(val) if config.refit else None  # what the final model trains on
    if model.bag is not None:
        freeze(model.bag)  # fitted as a logistic regression when a phase starts (see below)
    run = Optimisation(model, config.learning_rate, config.weight_decay, config.clip_norm, config.precision,
                       processes, config.threads)
    generator = torch.Generator().manual_seed(config.seed)
    checkpoint_config = {"task": "classify", "model": asdict(model_config), "labels": prepared.labels,
                         "max_length": config.max_length, "training": asdict(config), "data": data.path}

    state = RunState({"phase": "select", "epoch": 1, "batch": 0, "step": 0, "history": [], "best": None, "stale": 0,
                      "elapsed": 0.0, "since": epoch_counts(), "stopped": None}, generator)
    settings = {"training": asdict(config), "model": asdict(model_config)}
    notes = state.resume(out_dir, run, settings) if resume else []
    p = state.progress

    def loss_for(split: Split) -> nn.CrossEntropyLoss:
        weights = class_weights(split.targets, len(prepared.labels), config.class_weighting)
        return nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing, reduction="sum")

    with RunLog(out_dir / "train.log", processes, append=resume) as log:
        log.begin(notes, f"{data.path}: {len(data)} rows ({data.skipped_empty} empty skipped); "
                  + ", ".join(f"{name} {len(split)}" for name, split in prepared.splits.items())
                  + f"; {len(prepared.labels)} labels; vocabulary {len(prepared.vocabulary)}",
                  model, model_config, config)
        log(threads_note)
        watch = ThroughputWatch("texts", log)

        def fit_bag(split: Split, validation: Split | None, penalties: tuple[float, ...]) -> dict:
            """Fit the n-gram member on ``split`` (choosing its penalty on ``validation``, if given), in at most
            ``FIT_SHARE`` of the time budget."""
            fit_started = time.monotonic()

            def time_is_up() -> bool:
                return config.time_budget is not None and \
                    processes.agreed(time.monotonic() - fit_started) > FIT_SHARE * config.time_budget

            fit = fit_ngram_bag(model.bag, (split.ids, split.targets),
                                None if validation is None else (validation.ids, validation.targets),
                                class_weights(split.targets, len(prepared.labels), config.bag_class_weighting),
                                lambda logits, targets: selection_score(logits, targets, prepared.labels, config),
                                time_is_up, penalties)
            fit["seconds"] = processes.agreed(fit["seconds"])  # what is left of the budget: alike everywhere
            log(f"n-gram member fitted on {len(split)} rows in {fit['seconds']:.1f} s: l2 {fit['l2']:g}"
                + ("" if validation is None else f", validation score ({config.select_by}) {fit['val_score']:.4f}"))
            return fit

        def train_epochs(split: Split, epochs: int, time_budget: float | None, first_step: int,
                         end_of_epoch: Callable[[float], None]) -> None:
            """The steps of one phase over ``split`` from where ``p`` stands; ``end_of_epoch(seconds)`` after
            each epoch, and after an epoch cut short by the time budget."""
            loss_function = loss_for(split)
            total_steps = math.ceil(len(split) / config.batch_size) * epochs
            started = time.monotonic() - p["elapsed"]
            bar = tqdm(total=epochs, initial=p["epoch"] - 1, desc=p["phase"], unit="epoch",
                       disable=not (progress and processes.main))

            def this_epoch(generator: torch.Generator) -> list[Split]:
                return epoch_batches(split, config.batch_size, generator)

            with state.ends_on_interrupt(processes):  # Ctrl-C: see below for what is kept
                for item in state.batches(this_epoch, epochs, total_steps, time_budget, started, processes, first_step):
                    if item is None:  # an epoch is complete
                        end_of_epoch(time.monotonic() - started)
                        bar.update()
                        since = p["since"]
                        shown = {"loss": f"{since['loss'] / max(since['divisor'], 1e-12):.3f}",
                                 "texts_s": f"{since['seen'] / max(since['seconds'], 1e-9):.0f}"}
                        if p["phase"] == "select":
                            last = p["history"][-1]
                            shown.update(val_acc=f"{last['val_accuracy']:.3f}", val_f1=f"{last['val_macro_f1']:.3f}")
                        bar.set_postfix(shown)
                        p["since"] = epoch_counts()
                        continue
                    batch, progress_now = item
                    began = time.monotonic()
                    mine = Split(*(processes.rows(t) for t in (batch.ids, batch.lengths, batch.targets)))
                    member_logits = classification_loss = None

                    def loss_sum(network, mine=mine):
                        nonlocal member_logits, classification_loss
                        loss, divisor, member_logits, classification_loss = batch_loss(network, mine, loss_function)
                        return loss, divisor

                    rate = warmup_cosine(progress_now, config.learning_rate, config.warmup_fraction)
                    _, divisor = run.step(rate, loss_sum)
                    predicted = ensemble(member_logits, model.member_weights).argmax(1)
                    correct, classification_loss = processes.total(
                        torch.tensor([float((predicted == mine.targets).sum()), float(classification_loss)])).tolist()
                    p["step"] += 1
                    p["batch"] += 1
                    since = p["since"]
                    since["seen"] += len(batch)
                    since["loss"] += classification_loss  # the training loss shown and logged leaves out the LM loss
                    since["divisor"] += divisor
                    since["correct"] += int(correct)
                    since["seconds"] += time.monotonic() - began
                    watch.update(len(batch), time.monotonic() - began, bar)
                    if config.checkpoint_every and p["step"] % config.checkpoint_every == 0:
                        p["elapsed"] = time.monotonic() - started
                        state.save(out_dir, run, settings, processes)
            if p["since"]["seen"]:  # the steps of an epoch cut short by the time budget or Ctrl-C
                end_of_epoch(time.monotonic() - started)
            p["elapsed"] = time.monotonic() - started
            bar.close()

        def validate(seconds: float) -> None:
            """Score the validation split after an epoch of selection; early stopping may end the phase."""
            since = p["since"]
            member_logits = batched_logits(model, val.ids, val.lengths, per_member=True)
            model.member_weights.copy_(fit_member_weights(member_logits, val.targets))
            val_logits = ensemble(member_logits, model.member_weights)
            val_metrics = classification_metrics(val_logits.argmax(1), val.targets, prepared.labels)
            record = {"epoch": p["epoch"], "train_loss": since["loss"] / max(since["divisor"], 1e-12),
                      "train_accuracy": since["correct"] / max(since["seen"], 1),
                      "val_loss": float(nn.functional.cross_entropy(val_logits, val.targets)),
                      "val_accuracy": val_metrics["accuracy"], "val_macro_f1": val_metrics["macro_f1"],
                      "texts_per_second": since["seen"] / max(since["seconds"], 1e-9), "seconds": seconds}
            p["history"].append(record)
            improved = state.record(selection_score(val_logits, val.targets, prepared.labels, config),
                                    model.state_dict())
            if improved:
                p["selected"] = {"epoch": p["epoch"], "val": val_metrics}
                if processes.main:
                    save_checkpoint(out_dir, model, prepared.vocabulary, {**checkpoint_config, "epoch": p["epoch"]})
            log(json.dumps(record) + ("  (best)" if improved else ""))
            if p["stale"] >= config.patience and p["stopped"] is None:  # not after a budget or Ctrl-C ended it
                p["stopped"] = "early stopping"

        def count_refit_epoch(seconds: float) -> None:
            since = p["since"]
            log(json.dumps({"refit_epoch": p["epoch"], "train_loss": since["loss"] / max(since["divisor"], 1e-12),
                            "texts_per_second": since["seen"] / max(since["seconds"], 1e-9), "seconds": seconds}))

        if p["phase"] == "select":
            if model.bag is not None and p["step"] == 0:
                p["bag_fit"] = fit_bag(train, val, L2_PATH)
            fitting = p["bag_fit"]["seconds"] if "bag_fit" in p else 0.0
            # the fit's time comes out of the budget; the steps' schedule (warm-up, cosine) spans what is left,
            # shared with the refit in proportion to the rows each phase trains on
            share = len(train) / (len(train) + len(train_and_val)) if config.refit else 1.0
            budget = None if config.time_budget is None else max(config.time_budget - fitting, 0.0) * share
            train_epochs(train, config.epochs, budget, 0, validate)
            log(f"selection stopped by {p['stopped'] or 'epochs'} after {fitting + p['elapsed']:.1f} s; "
                f"best epoch {p['selected']['epoch']}")
            p["selection"] = {"stopped_by": p["stopped"] or "epochs", "seconds": fitting + p["elapsed"],
                              "epochs_run": len(p["history"]), **p.pop("selected")}
            model.load_state_dict(state.best_weights)  # with the pool weights fitted for it
            if config.refit and p["stopped"] == "interrupt":
                log("no refit: the run was interrupted, the selected model is the final one")
            elif config.refit:
                p.update(phase="refit", epoch=1, batch=0, refit_from=p["step"], elapsed=0.0, stopped=None)
                state.best_weights = None
                torch.manual_seed(config.seed + 1)  # the final model starts anew, from its own seed
                model.load_state_dict({**SequenceClassifier(model_config).state_dict(),
                                       "member_weights": model.member_weights})
                run.restart()
                generator.manual_seed(config.seed + 1)
                state.epoch_start = generator.get_state()
                if model.bag is not None:
                    p["refit_bag_fit"] = fit_bag(train_and_val, None, (p["bag_fit"]["l2"],))
                log(f"final model: trained afresh on train + val ({len(train_and_val)} rows) for "
                    f"{p['selection']['epochs_run']} epochs")
        if p["phase"] == "refit":
            used = p["selection"]["seconds"] + p.get("refit_bag_fit", {}).get("seconds", 0.0)
            budget = None if config.time_budget is None else max(config.time_budget - used, 0.0)
            train_epochs(train_and_val, p["selection"]["epochs_run"], budget, p["refit_from"], count_refit_epoch)
            steps = p["step"] - p["refit_from"]
            p["refit"] = {"rows": len(train_and_val), "steps": steps,
                          "epochs": round(steps / math.ceil(len(train_and_val) / config.batch_size), 2),
                          "stopped_by": p["stopped"] or "epochs",
                          "seconds": p["elapsed"] + p.get("refit_bag_fit", {}).get("seconds", 0.0)}
            if p["stopped"] == "interrupt":  # a refit cut short is not annealed: the selected model stays final
                model.load_state_dict(load_checkpoint(out_dir)[1])
                log("refit interrupted: the selected model (the checkpoint written during selection) is the final one")
            elif processes.main:
                save_checkpoint(out_dir, model, prepared.vocabulary,
                                {**checkpoint_config, "epoch": p["selection"]["epochs_run"], "refit": True})
        log(f"stopped after {p['selection']['seconds'] + p.get('refit', {}).get('seconds', 0.0):.1f} s")

        metrics = {"stopped_by": p["selection"]["stopped_by"], "epochs_run": len(p["history"]),
                   "selected_epoch": p["selection"]["epoch"],
                   "training_seconds": p["selection"]["seconds"] + p.get("refit", {}).get("seconds", 0.0),
                   "history": p["history"]}
        if "bag_fit" in p:
            metrics["ngram_member_fit"] = p["bag_fit"]
        if "refit" in p:
            metrics["refit"] = {**p["refit"], **({"ngram_member_fit": p["refit_bag_fit"]} if "refit_bag_fit" in p
                                                 else {})}
        metrics["val"] = p["selection"]["val"]  # the selection model's: the final one may have trained on val
        if "test" in prepared.splits:
            test = prepared.splits["test"]
            metrics["test"] = classification_metrics(batched_logits(model, test.ids, test.lengths).argmax(1),
                                                     test.targets, prepared.labels)
        if processes.main:
            atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
            plot_curves(p["history"], out_dir / "curves.png", curves_caption(metrics))
            shown = "test" if "test" in metrics else "val"
            plot_confusion(metrics[shown]["confusion_matrix"], prepared.labels, out_dir / "confusion.png", shown)
        log(" ".join(f"{name} accuracy {metrics[name]['accuracy']:.4f} macro-F1 {metrics[name]['macro_f1']:.4f}"
                     for name in ("val", "test") if name in metrics))
    return metrics
