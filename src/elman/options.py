"""Settings that are also command-line options: a config dataclass's field holds its default and its help
together (``option``), and ``elman train`` makes one flag of each such field, so that ``--help`` can never
disagree with the code."""

from __future__ import annotations

import argparse
from dataclasses import field
from typing import Any


def option(default: Any, help: str, **argparse: Any) -> Any:
    """A dataclass field with ``default``, shown by ``elman train --help`` as ``help`` followed by its default.
    ``argparse``: what else the flag needs (``type``, ``choices``, ``metavar``)."""
    return field(default=default, metadata={"help": help, **argparse})


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def orders(text: str) -> tuple[int, ...]:
    """"1,2,3" -> (1, 2, 3); "none" -> ()."""
    if text.strip().lower() == "none":
        return ()
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated n-gram orders like 1,2,3,4 or none, got {text!r}") from None
    if any(order < 1 for order in values):
        raise argparse.ArgumentTypeError(f"n-gram orders must be positive, got {text!r}")
    return values


# What the settings both trainers have mean (each trainer gives its own default): said once
COMMON = {
    "epochs": {"help": "most passes over the training data; a time budget or early stopping usually ends the run "
                       "first", "type": positive_int},
    "batch_size": {"help": "texts (lines) per step; a long text: parallel streams", "type": positive_int},
    "learning_rate": {"help": "AdamW's peak rate, after the warm-up", "type": positive_float},
    "weight_decay": {"help": "AdamW's decoupled decay", "type": non_negative_float},
    "time_budget": {"help": "stop cleanly after this many seconds, keeping the best checkpoint",
                    "type": positive_float, "metavar": "SECONDS"},
    "patience": {"help": "validations without improvement before stopping", "type": positive_int},
    "max_length": {"help": "characters kept per text or line", "type": positive_int},
    "seed": {"help": "weights, dropout, batch order and random splits", "type": int},
    "threads": {"help": "CPU threads (None: the cores free at the start)", "type": positive_int},
    "precision": {"help": "bf16: bfloat16 GEMMs, float32 weights and states; auto: bf16 where the CPU is fast at it",
                  "choices": ("auto", "bf16", "fp32")},
    "checkpoint_every": {"help": "steps between training states for --resume (0: none)", "type": int,
                         "metavar": "STEPS"},
}


def common(name: str, default: Any) -> Any:
    """The field of a setting both trainers have (``COMMON``), with this trainer's default."""
    return option(default, **COMMON[name])
