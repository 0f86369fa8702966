"""A run's log, ``train.log`` (``RunLog``), and the warning it gives when the run slows down because other
processes take its cores (``ThroughputWatch``)."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from torch import nn

from elman.training.precision import resolve
from elman.training.processes import Processes


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
            bar.write(message, file=sys.stderr)  # stdout may be --json's


