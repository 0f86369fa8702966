"""Elman (1990), experiment 2: structure in letter sequences (Table 1, Figs. 4-5).

Random consonants b, d, g, each followed by a fixed vowel run (ba, dii, guuu), coded as 6 phonetic
features. The consonants are unpredictable but the vowels are not, and neither is *when* the next
consonant comes: error on the "consonant" feature stays low everywhere, while error on the "high"
feature (which tells d from b and g) peaks at every consonant.

Network: 6 inputs -> 20 sigmoid hidden units -> 6 sigmoid outputs, trained on a 1,000-consonant stream
(Elman: 200 passes), tested on a fresh one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from elman.datasets.elman1990 import FEATURE_NAMES, SYLLABLES, encode_letters, letter_stream
from elman.experiments.results import Check, ExperimentResult
from elman.experiments.srn import SrnSettings, run_on_stream, train_on_stream
from elman.plots import new_figure, save_figure

CONSONANT, HIGH = FEATURE_NAMES.index("consonant"), FEATURE_NAMES.index("high")


@dataclass
class LettersConfig(SrnSettings):
    num_consonants: int = 1000
    passes: int = 200  # as Elman
    plot_steps: int = 20


def plot(text: str, bit_errors: torch.Tensor, rms: torch.Tensor, path: Path, steps: int) -> None:
    """Fig. 4 (RMS over all bits) and Fig. 5 (consonant and high bits), labelled with the target letter."""
    figure, panels = new_figure(3, 1, figsize=(7, 6.5), sharex=True)
    series = ((rms, "RMS error, all 6 bits (cf. Fig. 4)"),
              (bit_errors[:, CONSONANT], "error on bit 1, consonant (cf. Fig. 5a)"),
              (bit_errors[:, HIGH], "error on bit 4, high (cf. Fig. 5b)"))
    for axes, (values, title) in zip(panels, series, strict=True):
        axes.plot(range(steps), values[:steps].tolist(), color="black", marker="o", markersize=3)
        for t in range(steps):
            axes.annotate(f"({text[t + 1]})", (t, float(values[t])), textcoords="offset points", xytext=(0, 5),
                          ha="center", fontsize=7)
        axes.set(ylim=(0, 1.05), title=title)
    panels[-1].set_xlabel("step (label: the letter to be predicted)")
    save_figure(figure, path)


def run(config: LettersConfig, out_dir: Path | None = None, progress: bool = True) -> ExperimentResult:
    model = config.network(6, 6)
    train = encode_letters(letter_stream(config.num_consonants, seed=config.seed))
    train_on_stream(model, train, torch.roll(train, -1, dims=0), config, "letters", progress)

    text = letter_stream(config.num_consonants, seed=config.seed + 1)  # a fresh test stream
    features = encode_letters(text)
    prediction, _ = run_on_stream(model, features[:-1])
    target = features[1:]
    bit_errors = (prediction - target).abs()  # (N - 1, 6)
    rms = ((prediction - target) ** 2).mean(1).sqrt()
    next_is_consonant = torch.tensor([letter in SYLLABLES for letter in text[1:]])
    # the first vowel after a consonant is fully determined by that consonant
    first_vowel = torch.tensor([text[t] in SYLLABLES for t in range(len(text) - 1)])
    exact = ((prediction > 0.5).float() == target).all(1)

    vowel_rms, consonant_rms = rms[~next_is_consonant].mean().item(), rms[next_is_consonant].mean().item()
    consonant_bit, high_bit = bit_errors[:, CONSONANT].mean().item(), bit_errors[:, HIGH].mean().item()
    first_vowel_correct = exact[first_vowel].float().mean().item()
    figures = []
    if out_dir is not None:
        plot(text, bit_errors, rms, out_dir / "letters.png", config.plot_steps)
        figures.append("letters.png")
    return ExperimentResult(
        name="letters",
        title="Experiment 2: structure in letter sequences",
        summary=(f"test stream: RMS error predicting vowels {vowel_rms:.3f}, consonants {consonant_rms:.3f}; "
                 f"mean error on the consonant bit {consonant_bit:.3f}, on the high bit {high_bit:.3f}; "
                 f"first vowel after a consonant exactly right {first_vowel_correct:.0%}"),
        numbers={"vowel_rms": vowel_rms, "consonant_rms": consonant_rms, "consonant_bit_error": consonant_bit,
                 "high_bit_error": high_bit, "first_vowel_correct": first_vowel_correct,
                 "test_letters": len(text)},
        checks=[
            Check("vowels are predicted far better than consonants",
                  "error low on vowels, high on consonants (Fig. 4)", "vowel RMS < 0.5 x consonant RMS",
                  f"{vowel_rms:.3f} vs {consonant_rms:.3f}", vowel_rms < 0.5 * consonant_rms),
            Check("error on the consonant bit is below error on the high bit",
                  "bit 1 error consistently lower than bit 4 error (Fig. 5)", "bit 1 error < bit 4 error",
                  f"{consonant_bit:.3f} vs {high_bit:.3f}", consonant_bit < high_bit),
            Check("first vowel after each consonant predicted exactly (all 6 bits)",
                  "determined by the consonant (a reimplementation: vowels 95% correct)", ">= 90% exactly right",
                  f"{first_vowel_correct:.1%}", first_vowel_correct >= 0.9),
        ],
        figures=figures,
    )
