"""Elman (1990), experiment 4: discovering lexical classes from word order (Tables 3-5, Figs. 7-8).

10,000 two- and three-word sentences from 16 templates are run together word by word, each word a
31-bit localist vector that says nothing about its class. The network predicts the next word. Since
the next word is not determined, its output is scored against *likelihood vectors*: for each token, the
distribution of successors over all training sentences identical up to and including that token.

Then the weights are frozen, the corpus is presented once more, and the hidden vectors are averaged per
word. Hierarchical clustering of the 29 averages recovers the lexical classes (verbs vs nouns at the
top, animates vs inanimates, humans, food, breakables) although no class was ever given. Last, the
novel word "zog" (one of the two reserved input bits, never trained) replaces "man" in a new corpus;
its averaged hidden vector joins the humans.

Network: 31 inputs -> 150 sigmoid hidden units -> 31 sigmoid outputs trained on squared error, weights
uniform in +-0.5, 6 passes, as Elman. (``output="softmax"`` trains with cross-entropy instead: it fits the
likelihood vectors a little better, but its hidden states place "zog" with the small animals.)
"""

from __future__ import annotations

import copy
import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.cluster import hierarchy

from elman.datasets.elman1990 import NOUNS, NOVEL_WORD, VERBS, VOCABULARY, category_of, sentence_corpus
from elman.experiments.results import Check, ExperimentResult
from elman.experiments.srn import SrnSettings, run_on_stream, train_on_stream
from elman.plots import new_figure, save_figure

HUMANS = frozenset(w for w in NOUNS if category_of(w) == "HUM")
ANIMATES = frozenset(w for w in NOUNS if category_of(w) in ("HUM", "ANIM", "AGRESS"))
INDEX = {word: i for i, word in enumerate(VOCABULARY)}


@dataclass
class SentencesConfig(SrnSettings):
    num_sentences: int = 10_000
    preset: str = "elman1990"
    hidden_size: int = 150
    init_scale: float | None = 0.5  # large recurrent weights keep more context in the states
    output: str = "sigmoid"  # Elman's units and squared error; or "softmax" with cross-entropy
    passes: int = 6  # as Elman; longer training tunes the states to prediction alone and blurs the classes
    learning_rate: float = 0.003
    # 16 streams keep the classes apart and fit the likelihood vectors (docs/measurements.md, "Elman's sentences")
    segments: int = 16
    linkage: str = "complete"  # hierarchical clustering of mean hidden vectors, Euclidean distance


def token_stream(sentences: list[list[str]]) -> torch.Tensor:
    """Sentences -> (N,) vocabulary indices, run together with no break."""
    return torch.tensor([INDEX[w] for sentence in sentences for w in sentence])


def likelihood_vectors(sentences: list[list[str]]) -> torch.Tensor:
    """(N, 31): for each token, the distribution of the next word over every sentence that is identical
    up to and including this token. A sentence-final token's successor is the next sentence's first word
    (the corpus wraps around)."""
    keys, successors = [], []
    tokens = [w for sentence in sentences for w in sentence]
    position = 0
    for sentence in sentences:
        for i in range(len(sentence)):
            keys.append(tuple(sentence[: i + 1]))
            position += 1
            successors.append(tokens[position % len(tokens)])
    counts: dict[tuple, Counter] = defaultdict(Counter)
    for key, successor in zip(keys, successors, strict=True):
        counts[key][successor] += 1
    table = {}
    for key, counter in counts.items():
        row = torch.zeros(len(VOCABULARY))
        for word, count in counter.items():
            row[INDEX[word]] = count
        table[key] = row / row.sum()
    return torch.stack([table[key] for key in keys])


def mean_hidden_by_word(hidden: torch.Tensor, tokens: torch.Tensor) -> dict[str, np.ndarray]:
    """Average the hidden vectors (N, H) of every token of each word."""
    return {VOCABULARY[i]: hidden[tokens == i].mean(0).numpy() for i in tokens.unique().tolist()}


def cluster(vectors: dict[str, np.ndarray], method: str) -> tuple[list[str], np.ndarray]:
    words = sorted(vectors)
    return words, hierarchy.linkage(np.stack([vectors[w] for w in words]), method=method, metric="euclidean")


def subtrees(words: list[str], linkage: np.ndarray) -> list[frozenset[str]]:
    """The word set under every node of the dendrogram, leaves included."""
    sets = [frozenset([w]) for w in words]
    for left, right, _, _ in linkage:
        sets.append(sets[int(left)] | sets[int(right)])
    return sets


def top_split(words: list[str], linkage: np.ndarray) -> tuple[frozenset[str], frozenset[str]]:
    """The two clusters joined last."""
    sets = subtrees(words, linkage)
    left, right = int(linkage[-1, 0]), int(linkage[-1, 1])
    return sets[left], sets[right]


def split_of(group: frozenset[str], words: list[str], linkage: np.ndarray) -> tuple[frozenset, frozenset] | None:
    """The two children of the node whose leaves are exactly ``group``; None if no node has them."""
    sets = subtrees(words, linkage)
    for node, (left, right, _, _) in enumerate(linkage, start=len(words)):
        if sets[node] == group:
            return sets[int(left)], sets[int(right)]
    return None


def smallest_cluster_with(word: str, words: list[str], linkage: np.ndarray) -> frozenset[str]:
    """The first cluster that ``word`` joins: the smallest subtree holding it and any other word."""
    return min((s for s in subtrees(words, linkage) if word in s and len(s) > 1), key=len)


def plot_dendrogram(words: list[str], linkage: np.ndarray, title: str, path: Path) -> None:
    colours = {"VERB": "tab:red", "HUM": "tab:blue", "ANIM": "tab:cyan", "AGRESS": "tab:purple",
               "INANIM": "tab:brown", "FRAG": "tab:orange", "FOOD": "tab:green"}
    figure, axes = new_figure(figsize=(6, 7.5))
    hierarchy.dendrogram(linkage, labels=[w.upper() if w == NOVEL_WORD else w for w in words],
                         orientation="left", color_threshold=0, above_threshold_color="black", ax=axes)
    for label in axes.get_ymajorticklabels():
        word = label.get_text().lower()
        label.set_color("black" if word == NOVEL_WORD else colours[category_of(word)])
        if word == NOVEL_WORD:
            label.set_fontweight("bold")
    axes.set_title(title, fontsize=10)
    axes.set(xlabel="Euclidean distance between mean hidden vectors")
    save_figure(figure, path)


def run(config: SentencesConfig, out_dir: Path | None = None, progress: bool = True) -> ExperimentResult:
    sentences = sentence_corpus(config.num_sentences, seed=config.seed, preset=config.preset)
    tokens = token_stream(sentences)
    one_hot = torch.nn.functional.one_hot(tokens, len(VOCABULARY)).float()
    model = config.network(len(VOCABULARY), len(VOCABULARY), output=config.output)
    untrained = copy.deepcopy(model)
    targets = torch.roll(tokens, -1) if config.output == "softmax" else torch.roll(one_hot, -1, dims=0)
    train_on_stream(model, one_hot, targets, config, "sentences", progress)

    # scored on the training set, as in the paper
    prediction, hidden = run_on_stream(model, one_hot)
    likelihood = likelihood_vectors(sentences)
    rms = ((prediction - likelihood) ** 2).mean(1).sqrt()
    cosine = torch.nn.functional.cosine_similarity(prediction, likelihood, dim=1)
    next_word = torch.nn.functional.one_hot(torch.roll(tokens, -1), len(VOCABULARY)).float()
    rms_next_word = ((prediction - next_word) ** 2).mean(1).sqrt()

    words, linkage = cluster(mean_hidden_by_word(hidden, tokens), config.linkage)
    first, second = top_split(words, linkage)
    verbs_vs_nouns = {first, second} == {frozenset(VERBS), frozenset(NOUNS)}
    noun_split = split_of(frozenset(NOUNS), words, linkage)
    animates_split = noun_split is not None and set(noun_split) == {ANIMATES, frozenset(NOUNS) - ANIMATES}
    clusters = set(subtrees(words, linkage))
    pure = {name: frozenset(w for w in NOUNS if category_of(w) == name) in clusters
            for name in ("HUM", "FOOD", "FRAG")}

    # the novel word: "zog" wherever "man" could be, presented once with the weights frozen
    zog_sentences = sentence_corpus(config.num_sentences, seed=config.seed + 1, preset=config.preset,
                                    substitute={"man": NOVEL_WORD})
    zog_tokens = token_stream(zog_sentences)
    _, zog_hidden = run_on_stream(model, torch.nn.functional.one_hot(zog_tokens, len(VOCABULARY)).float())
    zog_words, zog_linkage = cluster(mean_hidden_by_word(zog_hidden, zog_tokens), config.linkage)
    zog_cluster = smallest_cluster_with(NOVEL_WORD, zog_words, zog_linkage) - {NOVEL_WORD}
    zog_joins_humans = zog_cluster <= HUMANS
    # the zog figure draws a whole tree: its top split is checked as Fig. 7's is, with zog among the nouns
    zog_first, zog_second = top_split(zog_words, zog_linkage)
    zog_nouns = frozenset(NOUNS) - {"man"} | {NOVEL_WORD}
    zog_verbs_vs_nouns = {zog_first, zog_second} == {frozenset(VERBS), zog_nouns}

    # control (Plate, in Elman's fn. 6): the same averaging on the untrained network
    _, raw_hidden = run_on_stream(untrained, one_hot)
    raw_words, raw_linkage = cluster(mean_hidden_by_word(raw_hidden, tokens), config.linkage)
    raw_verbs_vs_nouns = set(top_split(raw_words, raw_linkage)) == {frozenset(VERBS), frozenset(NOUNS)}

    def describe(group: frozenset[str]) -> str:
        return "{" + ", ".join(sorted(group)) + "}"

    figures = []
    if out_dir is not None:
        plot_dendrogram(words, linkage, "Mean hidden vector per word (cf. Fig. 7)", out_dir / "sentences.png")
        holds = textwrap.fill(f"zog first joins {describe(zog_cluster)}; verbs | nouns at the top: "
                              f"{'yes' if zog_verbs_vs_nouns else 'no'}", 80)
        plot_dendrogram(zog_words, zog_linkage, f'"zog" in place of "man" (cf. Fig. 8)\n{holds}', out_dir / "zog.png")
        figures += ["sentences.png", "zog.png"]

    return ExperimentResult(
        name="sentences",
        title="Experiment 4: discovering lexical classes from word order",
        summary=(f"{len(tokens)} words from {len(sentences)} sentences; against likelihood vectors: RMS "
                 f"{rms.mean():.3f} (SD {rms.std():.3f}), cosine {cosine.mean():.3f} (SD {cosine.std():.3f}); "
                 f"top split verbs | nouns: {'yes' if verbs_vs_nouns else 'NO'}; zog joins "
                 f"{describe(zog_cluster)}"),
        numbers={
            "words": len(tokens), "sentences": len(sentences),
            "rms_vs_likelihood": rms.mean().item(), "rms_vs_likelihood_sd": rms.std().item(),
            "cosine_vs_likelihood": cosine.mean().item(), "cosine_vs_likelihood_sd": cosine.std().item(),
            "rms_vs_next_word": rms_next_word.mean().item(),
            "top_split": [sorted(first), sorted(second)],
            "noun_split": [sorted(s) for s in noun_split] if noun_split else None,
            "zog_first_cluster": sorted(zog_cluster),
            "untrained_top_split_is_verbs_vs_nouns": raw_verbs_vs_nouns,
        },
        checks=[
            Check("top split of the dendrogram: verbs vs nouns", "verbs vs nouns (Fig. 7)",
                  "the two last-joined clusters are exactly the 11 verbs and the 18 nouns",
                  " | ".join(describe(s) for s in (first, second)), verbs_vs_nouns),
            Check('"zog" (in place of "man") first joins human nouns', "ZOG in the human branch (Fig. 8)",
                  "the first cluster zog joins holds human nouns only", describe(zog_cluster), zog_joins_humans),
            Check('the "zog" tree keeps verbs vs nouns at the top', "the whole tree keeps its structure (Fig. 8)",
                  "the two last-joined clusters are exactly the 11 verbs and the nouns with zog",
                  " | ".join(describe(s) for s in (zog_first, zog_second)), zog_verbs_vs_nouns, required=False),
            Check("RMS error against likelihood vectors", "0.053 (SD 0.100)", "mean < 0.1",
                  f"{rms.mean():.3f} (SD {rms.std():.3f})", rms.mean().item() < 0.1, required=False),
            Check("cosine with likelihood vectors", "0.916 (SD 0.123)", "mean > 0.85",
                  f"{cosine.mean():.3f} (SD {cosine.std():.3f})", cosine.mean().item() > 0.85, required=False),
            Check("nouns split into animates and inanimates", "animates vs inanimates (Fig. 7)",
                  "the nouns' node has exactly the animates and the inanimates as children",
                  " | ".join(describe(s) for s in noun_split) if noun_split else "no noun-only node",
                  animates_split, required=False),
            *(Check(f"{name} nouns form a pure cluster", f"{name.lower()} cluster (Fig. 7)",
                    "some node holds exactly these nouns", "yes" if ok else "no", ok, required=False)
              for name, ok in pure.items()),
        ],
        figures=figures,
    )
