"""What an experiment reports: its numbers, its checks (the paper's value beside ours) and its figures."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Check:
    name: str
    paper: str  # the paper's value or claim
    passes_if: str  # the condition on ours that passes, written out for the report
    ours: float | str
    passed: bool
    required: bool = True  # a required check is one of the paper's headline results; others inform


@dataclass
class ExperimentResult:
    name: str
    title: str
    summary: str  # a few lines of plain text for the terminal
    numbers: dict = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)  # file names inside the report directory

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks if check.required)
