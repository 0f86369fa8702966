"""Where a training run stands: what its steps add up (``Tally``), its progress (``Progress``, saved as JSON
with every training state) and everything else of it that changes as it goes (``RunState``): the batch
order, the best weights, a long text's carried state. ``elman.training.loop`` runs on them;
``elman.training.resume`` writes and reads them."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from elman.training.optimisation import Optimisation
from elman.training.processes import Processes
from elman.training.resume import (
    check_same_config,
    load_training_state,
    prefixed,
    save_training_state,
    unprefixed,
)
from elman.training.schedule import run_progress

RESUMABLE_CHANGES = ("time_budget", "threads", "checkpoint_every", "device")  # settings a resumed run may change


@dataclass
class Tally:
    """What training steps add up: items trained on (texts or characters), their summed loss and what its
    mean divides by, correct predictions (classifier), and seconds spent stepping."""

    items: int = 0
    loss: float = 0.0
    divisor: float = 0.0
    correct: int = 0
    seconds: float = 0.0

    def add(self, other: Tally) -> None:
        self.items += other.items
        self.loss += other.loss
        self.divisor += other.divisor
        self.correct += other.correct
        self.seconds += other.seconds

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.divisor, 1e-12)

    @property
    def per_second(self) -> float:
        return self.items / max(self.seconds, 1e-9)


@dataclass
class Progress:
    """Where a run stands; saved with every training state (as JSON) and taken up by ``--resume``."""

    phase: str = "train"  # the loop's current phase ("select" and "refit" for a classifier)
    first_step: int = 0  # the step at which the current phase's schedule began
    epoch: int = 1  # of the current phase, from 1
    batch: int = 0  # batches of the current epoch done
    step: int = 0  # updates done, all phases together
    history: list[dict] = field(default_factory=list)  # a record per validation
    best: float | None = None  # the best validation score so far (higher is better)
    stale: int = 0  # validations since the best
    elapsed: float = 0.0  # seconds of the current phase, at the last training state
    stopped: str | None = None  # what ended the phase: "early stopping", "time budget", "interrupt"
    since: Tally = field(default_factory=Tally)  # the steps since the last validation
    records: dict[str, dict] = field(default_factory=dict)  # a task's results by name, for its metrics

    @classmethod
    def from_json(cls, saved: dict) -> Progress:
        return cls(**{**saved, "since": Tally(**saved["since"])})


class RunState:
    """Everything of a run that changes as it goes, besides model and optimizer; a training state under
    ``resume/`` is a snapshot of it with them (see ``elman.training.resume``)."""

    def __init__(self, progress: Progress, generator: torch.Generator):
        self.progress = progress
        self.best_weights: dict[str, Tensor] | None = None
        self.generator = generator  # draws each epoch's batch order
        self.epoch_start = generator.get_state()  # the batch-order generator as the current epoch began
        self.carried: Tensor | None = None  # a long text's hidden state (L, B, H), whole global batch

    def batches(self, epoch_batches: Callable[[torch.Generator], Sequence], epochs: int, total_steps: int,
                time_budget: float | None, started: float, processes: Processes,
                first_step: int = 0) -> Iterator[tuple[Any, float] | None]:
        """The run's batches from where it stands, epoch after epoch, each with how far the run is (0 to 1,
        for the learning-rate schedule); ``None`` after each complete epoch, where the caller validates.
        ``first_step``: the value of ``progress.step`` where this schedule began (a run of several
        schedules numbers its steps on).

        Ends when the epochs are done, when the time budget is spent (``progress.stopped`` is then "time
        budget"; at least one step is always taken) or when the caller sets ``progress.stopped``. The caller
        counts the steps it takes in ``progress.step`` and ``progress.batch``, so that a training state saved
        between batches knows where to go on.
        """
        p = self.progress
        while p.stopped is None and p.epoch <= epochs:
            self.generator.set_state(self.epoch_start)
            for batch in epoch_batches(self.generator)[p.batch :]:
                elapsed = processes.agreed(time.monotonic() - started)
                if p.step > first_step and time_budget is not None and elapsed > time_budget:
                    p.stopped = "time budget"
                    return
                yield batch, run_progress(p.step - first_step, total_steps, elapsed, time_budget)
                if p.stopped is not None:
                    return
            yield None
            if p.stopped is None:
                p.epoch += 1
                p.batch = 0
                self.epoch_start = self.generator.get_state()

    @contextlib.contextmanager
    def ends_on_interrupt(self, processes: Processes) -> Iterator[None]:
        """Ctrl-C inside ends the phase as a time budget would: ``progress.stopped`` becomes "interrupt" and the
        caller keeps what was learnt. Once no step was taken, there is nothing to keep, and with several
        processes the others may wait inside a collective operation for this one: then the interrupt goes on up."""
        try:
            yield
        except KeyboardInterrupt:
            if processes.world > 1 or self.progress.step == 0:
                raise
            self.progress.stopped = "interrupt"

    def record(self, score: float, weights: dict[str, Tensor]) -> bool:
        """Note a validation score (higher is better) for early stopping, keeping a copy of the best weights.
        Returns whether the score improved on the best so far."""
        p = self.progress
        improved = p.best is None or score > p.best
        if improved:
            p.best, p.stale = score, 0
            self.best_weights = copy.deepcopy(weights)
        else:
            p.stale += 1
        return improved

    def resume(self, out_dir: Path, optimisation: Optimisation, settings: dict[str, dict]) -> list[str]:
        """Take up the newest intact training state; ``settings`` (config dicts by name) must match the
        saved ones. Returns lines for the log."""
        tensors, meta, problems = load_training_state(out_dir)
        for name, current in settings.items():
            check_same_config(meta[name], current, out_dir, RESUMABLE_CHANGES if name == "training" else ())
        optimisation.restore(tensors, meta["optimizer"])
        self.progress = Progress.from_json(meta["progress"])
        self.best_weights = unprefixed("best", tensors) or None
        self.epoch_start = tensors["rng.epoch_start"]
        self.carried = tensors.get("carried")
        notes = [f"{problem}; resuming from the training state before it" for problem in problems]
        return [*notes, f"resumed at step {meta['step']} (epoch {self.progress.epoch}) from {out_dir / 'resume'}"]

    def save(self, out_dir: Path, optimisation: Optimisation, settings: dict[str, dict]) -> None:
        tensors, optimizer_rest = optimisation.snapshot()
        tensors["rng.epoch_start"] = self.epoch_start
        if self.best_weights is not None:
            tensors.update(prefixed("best", self.best_weights))
        if self.carried is not None:
            tensors["carried"] = self.carried
        if optimisation.processes.main:
            save_training_state(out_dir, self.progress.step, tensors,
                                {"progress": asdict(self.progress), "optimizer": optimizer_rest, **settings})


