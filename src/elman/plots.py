"""Figures as PNG files, drawn off-screen and written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed, and never a window popping up from a library call

import matplotlib.pyplot as plt  # noqa: E402

from elman.files import atomic_output  # noqa: E402


def new_figure(*args, **kwargs):
    """``plt.subplots`` on the off-screen backend; returns (figure, axes)."""
    return plt.subplots(*args, **kwargs)


def save_figure(figure, path: str | Path) -> None:
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    plt.close(figure)
