"""The training loop both tasks run (``Run.train``), and where a run stands: its progress, its training
states for ``--resume``, its log. A task (``Task``) gives the loop its batches, its step and its validation;
the loop owns the rest: the schedule, the time budget, early stopping, training states, Ctrl-C, logging and
the progress bar."""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm import tqdm

from elman.training.optimisation import Optimisation
from elman.training.precision import resolve
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


class RunLog:
    """``train.log``, written by the main process only (appended to when a run resumes); call it with a line."""

    def __init__(self, path: Path, processes: Processes, append: bool):
        self.path, self.processes, self.append, self.file = path, processes, append, None

    def __enter__(self) -> RunLog:
        if self.processes.main:
            self.file = open(self.path, "a" if self.append else "w", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
        return self

    def __call__(self, message: str) -> None:
        if self.file is not None:
            self.file.write(message + "\n")
            self.file.flush()

    def begin(self, resume_notes: list[str], data: str, model: nn.Module, model_config, training_config) -> None:
        """The opening lines: where a resumed run took up, or what a new run learns from and with what."""
        for note in resume_notes:
            self(note)
        if not self.append:
            self(f"data {data}")
            total = sum(q.numel() for q in model.parameters())
            stepped = sum(q.numel() for q in model.parameters() if q.requires_grad)
            self(f"model {asdict(model_config)}; {total} parameters"
                 + (f", {stepped} of them trained by the optimizer's steps" if stepped != total else ""))
            device = next(model.parameters()).device
            precision = resolve(training_config.precision, device)
            self(f"training {asdict(training_config)}; on {device}, precision {precision}; "
                 f"{self.processes.world} process(es)")

    def __exit__(self, *exception) -> None:
        if self.file is not None:
            self.file.close()


class ThroughputWatch:
    """Says once, in the log and above the progress bar, when a run's throughput falls far below its own: a
    window of ``WINDOW_SECONDS`` of training under ``SLOW_SHARE`` of the best window of the run's first
    ``REFERENCE_SECONDS``, as when other processes take the cores (see elman/threads.py)."""

    WINDOW_SECONDS, REFERENCE_SECONDS, SLOW_SHARE = 10.0, 60.0, 0.4

    def __init__(self, unit: str, log: RunLog):
        self.unit, self.log = unit, log
        self.elapsed = self.items = self.seconds = self.best = 0.0
        self.warned = False

    def update(self, items: float, seconds: float, bar) -> None:
        """Count ``items`` trained in ``seconds`` of a step; ``bar`` is the run's progress bar."""
        self.items += items
        self.seconds += seconds
        if self.seconds < self.WINDOW_SECONDS:
            return
        rate = self.items / self.seconds
        self.elapsed += self.seconds
        self.items = self.seconds = 0.0
        if self.elapsed <= self.REFERENCE_SECONDS:
            self.best = max(self.best, rate)
        elif not self.warned and rate < self.SLOW_SHARE * self.best:
            self.warned = True
            message = (f"throughput fell to {rate:.0f} {self.unit}/s, {rate / self.best:.0%} of this run's first "
                       f"minute ({self.best:.0f}/s): other processes are probably using its cores. The run goes "
                       "on; fewer threads (--threads 1) hold up better on a busy machine.")
            self.log(message)
            bar.write(message)


class Task(Protocol):
    """What a trainer gives the loop: its data, its step and its validation. The loop owns the rest."""

    unit: str  # what the throughput counts: "texts" or "characters"

    def epoch(self, generator: torch.Generator) -> Sequence:
        """One epoch's global batches, in the order ``generator`` draws."""

    def step(self, optimisation: Optimisation, batch: Any, learning_rate: float) -> Tally:
        """One update on this process's share of ``batch``; what it adds up (``seconds`` is the loop's)."""

    def validate(self, progress: Progress, seconds: float) -> tuple[dict, float | None]:
        """After an epoch or ``eval_interval`` steps: the record for the log and the history, and the score
        early stopping reads (higher is better; None in a phase without validation: the record is only
        logged)."""

    def improved(self, progress: Progress) -> None:
        """The last validation was the best so far (its weights are kept): note it, write the checkpoint."""

    def carried(self) -> Tensor | None:
        """State carried from batch to batch (a long text's hidden state), whole global batch, to save."""

    def shown(self, tally: Tally, record: dict | None) -> dict:
        """What the progress bar shows after a step (``tally``: the steps since the last validation) or a
        validation (``record``)."""


@dataclass
class Phase:
    """One call of the loop: how long it trains, on what schedule, and how it validates."""

    name: str  # the progress bar's label
    epochs: int
    steps_per_epoch: int
    time_budget: float | None  # seconds; the schedule then runs on time and the phase ends at the budget
    learning_rate: Callable[[float], float]  # the rate at a point (0 to 1) of the phase
    patience: int = 0  # validations without improvement before early stopping
    eval_interval: int | None = None  # steps between validations; None: after every epoch


@dataclass
class Run:
    """A training run: the optimisation, its state, its log and where it writes. ``train`` is the loop."""

    optimisation: Optimisation
    state: RunState
    log: RunLog
    out_dir: Path
    settings: dict[str, dict]  # the configuration a resumed run must match
    checkpoint_every: int  # steps between training states (0: none)
    progress_bar: bool

    @property
    def progress(self) -> Progress:
        return self.state.progress

    @property
    def processes(self) -> Processes:
        return self.optimisation.processes

    def train(self, task: Task, phase: Phase) -> None:
        """Steps from where the run stands until the phase's epochs are done, its time budget is spent,
        early stopping or Ctrl-C; validates after every epoch (or ``eval_interval`` steps) and after the
        last steps, saves a training state every ``checkpoint_every`` steps."""
        p, processes = self.progress, self.processes
        started = time.monotonic() - p.elapsed
        total_steps = phase.epochs * phase.steps_per_epoch
        bar = tqdm(total=None if phase.time_budget else total_steps, initial=p.step - p.first_step, desc=phase.name,
                   unit="step", disable=not (self.progress_bar and processes.main))
        watch = ThroughputWatch(task.unit, self.log)
        with self.state.ends_on_interrupt(processes):
            for item in self.state.batches(task.epoch, phase.epochs, total_steps, phase.time_budget, started,
                                           processes, p.first_step):
                if item is None:  # an epoch is complete
                    if not phase.eval_interval:
                        self.validate(task, phase, time.monotonic() - started, bar)
                    continue
                batch, done = item
                began = time.monotonic()
                tally = task.step(self.optimisation, batch, phase.learning_rate(done))
                tally.seconds = time.monotonic() - began
                p.step += 1
                p.batch += 1
                p.since.add(tally)
                watch.update(tally.items, tally.seconds, bar)
                bar.update()
                bar.set_postfix(task.shown(p.since, None))
                if phase.eval_interval and p.step % phase.eval_interval == 0:
                    self.validate(task, phase, time.monotonic() - started, bar)
                if self.checkpoint_every and p.step % self.checkpoint_every == 0:
                    p.elapsed = time.monotonic() - started
                    self.state.carried = task.carried()
                    self.state.save(self.out_dir, self.optimisation, self.settings)
        if p.since.items:  # steps since the last validation: an epoch cut short, or after the last interval
            self.validate(task, phase, time.monotonic() - started, bar, last=True)
        p.elapsed = time.monotonic() - started
        bar.close()

    def validate(self, task: Task, phase: Phase, seconds: float, bar, last: bool = False) -> None:
        p = self.progress
        record, score = task.validate(p, seconds)
        bar.set_postfix(task.shown(p.since, record))
        p.since = Tally()
        if score is None:
            self.log(json.dumps(record))
            return
        p.history.append(record)
        improved = self.state.record(score, self.optimisation.module.state_dict())
        if improved:
            task.improved(p)
        self.log(json.dumps(record) + ("  (best)" if improved else ""))
        if not last and p.stale >= phase.patience and p.stopped is None:
            p.stopped = "early stopping"


@contextlib.contextmanager
def open_run(out_dir: Path, optimisation: Optimisation, model_config, config, resume: bool, about_data: str,
             threads_note: str, progress_bar: bool, phase: str = "train") -> Iterator[Run]:
    """A run beginning in ``phase``, or taken up from its newest training state (``resume``), with its log
    open. ``config`` is the training configuration (its ``seed`` draws the batch orders)."""
    state = RunState(Progress(phase=phase), torch.Generator().manual_seed(config.seed))
    settings = {"training": asdict(config), "model": asdict(model_config)}
    notes = state.resume(out_dir, optimisation, settings) if resume else []
    with RunLog(out_dir / "train.log", optimisation.processes, append=resume) as log:
        log.begin(notes, about_data, optimisation.module, model_config, config)
        log(threads_note)
        yield Run(optimisation, state, log, out_dir, settings, config.checkpoint_every, progress_bar)
