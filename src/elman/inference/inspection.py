"""Looking inside a trained model, character by character: what it predicts after each prefix of a text
and what its hidden units do meanwhile (Karpathy's "visualizing and understanding recurrent networks")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from elman.plots import new_figure, save_figure

HEATMAP_UNITS = 64  # the most active units shown in the figure; the arrays keep them all
VISIBLE = {" ": "\u2423", "\n": "\u23ce", "\t": "\u21e5"}  # blanks drawn as symbols in figures
MAX_TICKS = 100  # characters labelled along a figure's axis (a long text labels every k-th)
MAX_WIDTH_INCHES = 40  # a 1,000-character text would otherwise be 380 inches (45,000 pixels) wide


@dataclass
class Evidence:
    """Why a classifier's generative member prefers one class to another, token by token: for each character
    of the text and then its end (``"<eos>"``), ``log p(token | the text before it, labels[0]) - log p(token |
    the text before it, labels[1])`` in nats. Their sum is the member's whole log-likelihood ratio of the two
    classes, exactly: positive tokens speak for ``labels[0]``."""

    labels: tuple[str, str]  # the classifier's first and second choice for the whole text
    tokens: list[str]
    log_ratios: list[float]

    def as_json(self) -> dict:
        return {"labels": list(self.labels), "tokens": self.tokens, "log_ratios": self.log_ratios}


@dataclass
class Inspection:
    """One text read by a model.

    characters: the N characters read (after normalisation; the whole text); a line model's
        start with ``"<bos>"``, the start of the line.
    hidden: ``(N, units)``, the top recurrent layer's state after each character (for a bidirectional
        classifier, both directions side by side: the reverse direction has read the rest of the text).
    probabilities: ``(N, len(labels))``. Classifier: the class probabilities of each prefix
        ``text[:i + 1]`` classified on its own. Language model: the distribution of the character after
        ``text[:i + 1]``.
    labels: the columns of ``probabilities``: class names, or the model's characters (``"<eos>"`` is the
        end of a line).
    unknown_characters: characters of the text that training never showed a classifier, each read as
        ``<unk>`` (a language model refuses such a text instead).
    evidence: for a classifier with a generative member, each character's evidence for its first choice
        against its second (``Evidence``); else None.
    """

    task: str
    characters: list[str]
    hidden: np.ndarray
    probabilities: np.ndarray
    labels: list[str]
    unknown_characters: list[str] = field(default_factory=list)
    evidence: Evidence | None = None

    def top(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable labels after each character, most probable first."""
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [[(self.labels[j], float(row[j])) for j in ranks] for row, ranks in zip(self.probabilities, order,
                                                                                        strict=True)]

    def classes_to_draw(self, count: int = 5) -> list[int]:
        """Columns of ``probabilities`` worth a line: every class that leads after some prefix (in the order they
        first lead), then the final prediction's most probable, up to ``count`` in all (more only where more
        classes lead)."""
        leaders = list(dict.fromkeys(self.probabilities.argmax(axis=1).tolist()))
        final = [j for j in np.argsort(-self.probabilities[-1], kind="stable").tolist() if j not in leaders]
        return leaders + final[: max(count - len(leaders), 0)]

    def most_active_units(self, count: int = HEATMAP_UNITS) -> np.ndarray:
        """Indices of the ``count`` units whose state varies most over the text, in unit order."""
        spread = self.hidden.std(axis=0) if len(self.characters) > 1 else np.abs(self.hidden[0])
        return np.sort(np.argsort(-spread, kind="stable")[:count])


def plot_inspection(inspection: Inspection, path: str | Path, classes_shown: int = 5) -> None:
    """Top: how the prediction evolves over the characters; then, for a classifier with a generative member,
    each character's evidence for its first choice against its second; bottom: a heatmap of the most active
    units."""
    n = len(inspection.characters)
    every = math.ceil(n / MAX_TICKS)  # a long text labels every k-th character; the figure stays a readable width
    ticks = [VISIBLE.get(c, c) if i % every == 0 else "" for i, c in enumerate(inspection.characters)]
    units = inspection.most_active_units()
    heights = [1, 1.6] if inspection.evidence is None else [1, 0.8, 1.6]
    figure, panels = new_figure(len(heights), 1, gridspec_kw={"height_ratios": heights},
                                figsize=(min(max(6.0, 0.38 * n + 2.5), MAX_WIDTH_INCHES), 3 * sum(heights)))
    upper, lower = panels[0], panels[-1]
    if inspection.task == "classify":
        for j in inspection.classes_to_draw(classes_shown):
            upper.plot(range(n), inspection.probabilities[:, j], marker="o", label=inspection.labels[j])
        upper.set(ylim=(0, 1), ylabel="probability", title="class probabilities after each prefix")
        upper.legend(fontsize=8, loc="upper left")
    else:
        best = inspection.probabilities.max(axis=1)
        upper.bar(range(n), best, color="tab:blue")
        for i, ((label, _),) in enumerate(inspection.top(1)):
            if i % every == 0:
                upper.text(i, best[i] + 0.02, VISIBLE.get(label, label), ha="center", fontsize=8)
        upper.set(ylim=(0, 1.1), ylabel="probability", title="most likely next character after each character")
    upper.set_xticks(range(n), ticks)
    upper.grid(alpha=0.3)
    if inspection.evidence is not None:
        draw_evidence(panels[1], inspection.evidence, [*ticks, "<eos>"])
    extreme = float(np.abs(inspection.hidden).max(initial=1e-9))
    image = lower.imshow(inspection.hidden[:, units].T, aspect="auto", cmap="RdBu_r", interpolation="nearest",
                         vmin=-extreme, vmax=extreme)
    lower.set_xticks(range(n), ticks)
    lower.set(ylabel=f"unit ({len(units)} most active of {inspection.hidden.shape[1]})", title="hidden state")
    lower.set_yticks([])
    figure.colorbar(image, ax=lower, fraction=0.03)
    save_figure(figure, path)


def draw_evidence(axes, evidence: Evidence, ticks: list[str]) -> None:
    """One bar per token (``ticks`` label them): its log-likelihood ratio, up for the first choice."""
    ratios = np.asarray(evidence.log_ratios)
    first, second = evidence.labels
    axes.bar(range(len(ratios)), ratios, color=np.where(ratios >= 0, "tab:green", "tab:red"))
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(ratios)), ticks)
    axes.set(ylabel="nats", title=f"evidence of the generative member, per character\n{first} (up) against {second} "
                                  f"(down): {ratios.sum():+.2f} in all")
    axes.grid(alpha=0.3)
