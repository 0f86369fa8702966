"""What an inspection figure draws: every class that leads somewhere, a generative member's evidence, and a
readable size for long texts."""

from dataclasses import replace

import matplotlib.image
import numpy as np

from elman.inference import inspection as inspection_module
from elman.inference.inspection import MAX_WIDTH_INCHES, Evidence, Inspection, plot_inspection


def inspection(probabilities: np.ndarray) -> Inspection:
    n, classes = probabilities.shape
    return Inspection("classify", list("abcdefghij" * (n // 10 + 1))[:n], np.random.default_rng(0).normal(size=(n, 8)),
                      probabilities, [f"class {j}" for j in range(classes)])


def test_every_class_that_leads_after_some_prefix_is_drawn():
    probabilities = np.full((6, 8), 0.01)
    probabilities[:2, 7] = 0.9  # class 7 leads the first two prefixes, then falls to the bottom
    probabilities[2:, 2] = 0.6
    probabilities[-1, [0, 1, 3, 4]] = [0.2, 0.15, 0.1, 0.05]
    drawn = inspection(probabilities).classes_to_draw(5)
    assert drawn[:2] == [7, 2]  # the leaders, in the order they lead
    assert drawn[2:] == [0, 1, 3] and len(drawn) == 5  # then the final prediction's most probable


def test_more_leaders_than_the_count_are_all_drawn():
    probabilities = np.eye(7)[[0, 1, 2, 3, 4, 5, 6]]
    assert inspection(probabilities).classes_to_draw(5) == list(range(7))


def test_a_long_text_gives_a_figure_of_readable_width(tmp_path):
    probabilities = np.random.default_rng(1).dirichlet(np.ones(4), size=1_000)
    plot_inspection(inspection(probabilities), tmp_path / "long.png")
    height, width = matplotlib.image.imread(tmp_path / "long.png").shape[:2]
    assert width <= MAX_WIDTH_INCHES * 120 and height > 0


def test_a_generative_members_evidence_is_drawn_a_bar_per_character_between_the_other_panels(tmp_path, monkeypatch):
    drawn, save = [], inspection_module.save_figure

    def save_and_keep(figure, path):
        save(figure, path)
        drawn.append(figure)

    monkeypatch.setattr(inspection_module, "save_figure", save_and_keep)
    plain = inspection(np.random.default_rng(2).dirichlet(np.ones(4), size=3))
    evidence = Evidence(("class 1", "class 3"), [*plain.characters, "<eos>"], [1.5, -0.5, 0.25, 2.0])
    plot_inspection(plain, tmp_path / "plain.png")
    plot_inspection(replace(plain, evidence=evidence), tmp_path / "evidence.png")
    without, with_evidence = ([axes.get_title() for axes in figure.axes] for figure in drawn)
    assert without[:2] == [with_evidence[0], with_evidence[2]]  # the same panels around it
    panel = drawn[1].axes[1]
    assert panel.get_title().endswith("class 1 (up) against class 3 (down): +3.25 in all")
    assert [bar.get_height() for bar in panel.patches] == evidence.log_ratios
    assert [label.get_text() for label in panel.get_xticklabels()] == ["a", "b", "c", "<eos>"]
    assert matplotlib.image.imread(tmp_path / "evidence.png").shape[0] > matplotlib.image.imread(
        tmp_path / "plain.png").shape[0]
