"""The training loop both tasks run (``Run.train``). A task (``Task``) gives the loop its batches, its step
and its validation; the loop owns the rest: the schedule, the time budget, early stopping, training states,
Ctrl-C, logging and the progress bar. Where a run stands lives in ``elman.training.progress``."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm import tqdm

from elman.threads import set_training_threads
from elman.training.optimisation import Optimisation
from elman.training.processes import Processes
from elman.training.progress import Progress, RunState, Tally
from elman.training.resume import prepare_out_dir
from elman.training.run_log import RunLog, ThroughputWatch


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
                # not refresh: tqdm's own interval then decides the redraws, not every step (a log file of a
                # redirected run would get a line per step)
                bar.set_postfix(task.shown(p.since, None), refresh=False)
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
def open_run(out_dir: Path, model: nn.Module, model_config, config, processes: Processes, resume: bool,
             about_data: str, progress_bar: bool, phase: str = "train", **optimisation_options) -> Iterator[Run]:
    """A run of ``model`` beginning in ``phase``, or taken up from its newest training state (``resume``), with
    its threads set, ``out_dir`` prepared and its log open. ``config`` is the training configuration: its seed
    draws the batch orders, its threads, learning rate, weight decay, clip norm and precision make the
    optimisation, with a task's own ``optimisation_options`` (see ``Optimisation``)."""
    threads_note = set_training_threads(config.threads)
    if processes.main:
        prepare_out_dir(out_dir, resume)
    optimisation = Optimisation(model, config.learning_rate, config.weight_decay, config.clip_norm,
                                config.precision, processes, config.threads, **optimisation_options)
    state = RunState(Progress(phase=phase), torch.Generator().manual_seed(config.seed))
    settings = {"training": asdict(config), "model": asdict(model_config)}
    notes = state.resume(out_dir, optimisation, settings) if resume else []
    with RunLog(out_dir / "train.log", processes, append=resume) as log:
        log.begin(notes, about_data, model, model_config, config)
        log(threads_note)
        yield Run(optimisation, state, log, out_dir, settings, config.checkpoint_every, progress_bar)
