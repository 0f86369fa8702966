"""Figures as PNG files, drawn off-screen and written atomically.

Figures are ``matplotlib.figure.Figure`` objects drawn by the Agg canvas directly: pyplot is never imported, so
the library neither opens windows nor changes the process's backend (a notebook's, ``MPLBACKEND``, a user's
``matplotlib.use``), and a figure is freed with its last reference instead of living in pyplot's registry.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from elman.files import atomic_output

FIGURE_OPTIONS = ("figsize", "dpi", "layout")  # of the figure; the other options of new_figure go to subplots


def new_figure(*args, **kwargs):
    """``plt.subplots(*args, **kwargs)`` without pyplot; returns (figure, axes)."""
    figure = Figure(**{name: kwargs.pop(name) for name in FIGURE_OPTIONS if name in kwargs})
    FigureCanvasAgg(figure)
    return figure, figure.subplots(*args, **kwargs)


def save_figure(figure: Figure, path: str | Path) -> None:
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
