"""What an inspection figure draws: every class that leads somewhere, and a readable size for long texts."""

import matplotlib.image
import numpy as np

from elman.inference.inspection import MAX_WIDTH_INCHES, Inspection, plot_inspection


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
