"""Elman (1990), experiment 3: discovering the notion "word" (Table 2, Fig. 6).

200 sentences over a 15-word lexicon are run together letter by letter, with no breaks between words
or sentences, and each letter is a 5-bit code. Predicting the next letter is hard at the start of a
word and easy inside it, so the error peaks at word onsets: the network finds word boundaries that
were never marked. The grammar is a reconstruction (see ``elman.datasets.elman1990.word_sentences``).

Network: 5 inputs -> 20 sigmoid hidden units -> 5 sigmoid outputs (Elman: 10 passes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from elman.datasets.elman1990 import FIG6_PASSAGE, letter_codes, word_sentences
from elman.experiments.results import Check, ExperimentResult
from elman.experiments.srn import SimpleRecurrentNetwork, SrnSettings, run_on_stream, train_on_stream
from elman.plots import new_figure, save_figure


@dataclass
class WordsConfig(SrnSettings):
    num_sentences: int = 200
    letter_code: str = "alphabet"  # or "random"
    passes: int = 100  # Elman: 10 online passes


def letters_and_onsets(sentences: list[list[str]]) -> tuple[str, list[bool]]:
    """The unbroken letter stream and, per letter, whether it begins a word."""
    text, onsets = [], []
    for word in (w for sentence in sentences for w in sentence):
        text.append(word)
        onsets += [True] + [False] * (len(word) - 1)
    return "".join(text), onsets


def letter_errors(model: SimpleRecurrentNetwork, text: str, codes: dict) -> torch.Tensor:
    """RMS error (over the 5 bits) of predicting letter t + 1 after letters 0..t; shape (len(text) - 1,)."""
    vectors = torch.tensor([codes[letter] for letter in text], dtype=torch.float32)
    prediction, _ = run_on_stream(model, vectors[:-1])
    return ((prediction - vectors[1:]) ** 2).mean(1).sqrt()


def plot(text: str, errors: torch.Tensor, path: Path) -> None:
    figure, axes = new_figure(figsize=(11, 3.4))
    axes.plot(range(len(errors)), errors.tolist(), color="black", marker="o", markersize=3)
    for t, letter in enumerate(text[1:]):
        axes.annotate(letter, (t, float(errors[t])), textcoords="offset points", xytext=(0, 5), ha="center",
                      fontsize=8)
    axes.set(ylim=(0, max(0.8, float(errors.max()) + 0.1)), xlabel="letter (label: the letter to be predicted)",
             ylabel="RMS error", title="Error predicting each next letter; peaks mark word onsets (cf. Fig. 6)")
    save_figure(figure, path)


def run(config: WordsConfig, out_dir: Path | None = None, progress: bool = True) -> ExperimentResult:
    train_text, _ = letters_and_onsets(word_sentences(config.num_sentences, seed=config.seed))
    passage = FIG6_PASSAGE.replace(" ", "") + "m"
    codes = letter_codes(train_text + passage, config.letter_code, seed=config.seed)
    model = config.network(5, 5)
    train = torch.tensor([codes[letter] for letter in train_text], dtype=torch.float32)
    train_on_stream(model, train, torch.roll(train, -1, dims=0), config, "words", progress)

    # held-out sentences from the same grammar: is error higher where a word begins?
    test_text, test_onsets = letters_and_onsets(word_sentences(config.num_sentences, seed=config.seed + 1))
    errors = letter_errors(model, test_text, codes)
    onset = torch.tensor(test_onsets[1:])  # error[t] predicts letter t + 1
    onset_error, inside_error = errors[onset].mean().item(), errors[~onset].mean().item()
    threshold = errors.mean().item()
    flagged = errors > threshold
    precision = (flagged & onset).sum().item() / max(flagged.sum().item(), 1)
    recall = (flagged & onset).sum().item() / onset.sum().item()

    passage_errors = letter_errors(model, passage, codes)
    figures = []
    if out_dir is not None:
        plot(passage, passage_errors, out_dir / "words.png")
        figures.append("words.png")
    return ExperimentResult(
        name="words",
        title='Experiment 3: discovering the notion "word"',
        summary=(f"held-out stream of {len(test_text)} letters: RMS error at word onsets {onset_error:.3f}, "
                 f"inside words {inside_error:.3f}; boundaries where error > mean: precision {precision:.2f}, "
                 f"recall {recall:.2f}"),
        numbers={"train_letters": len(train_text), "onset_error": onset_error, "inside_word_error": inside_error,
                 "boundary_threshold": threshold, "boundary_precision": precision, "boundary_recall": recall,
                 "passage": passage, "passage_errors": passage_errors.tolist()},
        checks=[
            Check("error at word onsets is above error inside words",
                  "error high at the start of each word, falling as the word goes on (Fig. 6)",
                  "onset error > inside-word error", f"{onset_error:.3f} vs {inside_error:.3f}",
                  onset_error > inside_error),
            Check("an error threshold finds word boundaries",
                  "boundaries are graded, not categorical; not quantified", "precision and recall >= 0.5",
                  f"precision {precision:.2f}, recall {recall:.2f}", precision >= 0.5 and recall >= 0.5,
                  required=False),
        ],
        figures=figures,
    )
