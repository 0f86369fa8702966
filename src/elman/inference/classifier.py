"""A trained classifier ready to use: ``elman.load(DIR).predict(["Nakamoto"])``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from elman.checkpoint import CheckpointError, fitting_configuration, model_config
from elman.data.reader import LabelledTexts, normalise_text
from elman.data.vocabulary import EOS, Vocabulary, vectorize
from elman.errors import UsageError, UsageTypeError
from elman.inference.inspection import Evidence, Inspection
from elman.metrics import classification_metrics
from elman.models.classifier import ClassifierConfig, SequenceClassifier, batched_logits

MAX_TEXT_CHARS = 10_000
# inspect reads every prefix of the text: quadratic in its length (1,000 characters: ~0.5 M steps)
MAX_INSPECT_CHARS = 1_000


@dataclass
class Prediction:
    text: str
    labels: list[tuple[str, float]]  # (label, probability), most probable first
    # characters of the text that training never showed the model: it read each as <unk>
    unknown_characters: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        """The prediction as the CLI's ``--json`` and the HTTP API give it."""
        return {"text": self.text, "labels": [{"label": label, "probability": p} for label, p in self.labels],
                "unknown_characters": self.unknown_characters}


class Classifier:
    """A trained sequence classifier. ``predict`` takes texts and gives ranked labels with probabilities."""

    def __init__(self, model: SequenceClassifier, vocabulary: Vocabulary, labels: list[str], max_length: int,
                 config: dict):
        self.model = model.eval()
        self.vocabulary = vocabulary
        self.labels = labels
        self.max_length = max_length
        self.config = config

    @staticmethod
    def clean(texts: str | list[str]) -> list[str]:
        """Normalise texts as the reader does; refuse what cannot be classified."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)):
            raise UsageTypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
        cleaned = []
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise UsageTypeError(f"text {position} is a {type(text).__name__}, not a string")
            if len(text) > MAX_TEXT_CHARS:
                raise UsageError(f"text {position} has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
            text = normalise_text(text)
            if not text:
                raise UsageError(f"text {position} is empty")
            cleaned.append(text)
        return cleaned

    def probabilities(self, texts: str | list[str]) -> torch.Tensor:
        """(N, C) class probabilities, columns in the order of ``self.labels``."""
        return self._probabilities(self.clean(texts))

    def _probabilities(self, texts: list[str]) -> torch.Tensor:
        """Each text read whole: the network has no fixed length, and ``max_length`` bounds only training's."""
        ids, lengths = vectorize(texts, self.vocabulary, None)
        return torch.softmax(batched_logits(self.model, ids, lengths), dim=1)

    def predict(self, texts: str | list[str], top_k: int = 3) -> list[Prediction]:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise UsageError(f"top_k must be a positive integer, got {top_k!r}")
        cleaned = self.clean(texts)
        probabilities = self._probabilities(cleaned)
        values, indices = probabilities.topk(min(top_k, len(self.labels)), dim=1)
        return [
            Prediction(text, [(self.labels[i], float(p)) for p, i in zip(row_p.tolist(), row_i.tolist(), strict=True)],
                       self.vocabulary.unknown_characters(text))
            for text, row_p, row_i in zip(cleaned, values, indices, strict=True)
        ]

    @torch.no_grad()
    def inspect(self, text: str) -> Inspection:
        """How the class probabilities evolve prefix by prefix, and the hidden states over the characters."""
        if not isinstance(text, str):
            raise UsageTypeError(f"inspect takes one text, got {type(text).__name__}")
        [text] = self.clean(text)
        if len(text) > MAX_INSPECT_CHARS:
            raise UsageError(f"the text has {len(text)} characters; inspect shows one row per character and reads "
                             f"every prefix, so it takes at most {MAX_INSPECT_CHARS}")
        characters = list(text)
        prefixes = ["".join(characters[: i + 1]) for i in range(len(characters))]
        ids, lengths = vectorize([text], self.vocabulary, None)
        # states: (T, 1, M * D * H) for M recurrent members; T = <bos> + characters + <eos>
        _, states = self.model.eval().features(ids, lengths)
        hidden = states[1 : len(characters) + 1, 0]
        probabilities = self._probabilities(prefixes)
        return Inspection("classify", characters, hidden.numpy(), probabilities.numpy(), list(self.labels),
                          self.vocabulary.unknown_characters(text),
                          self._evidence(ids, lengths, probabilities[-1], [*characters, EOS]))

    def _evidence(self, ids: torch.Tensor, lengths: torch.Tensor, probabilities: torch.Tensor,
                  tokens: list[str]) -> Evidence | None:
        """A generative member's log-likelihood ratio, token by token, of the text ``ids`` (1, T) (its
        ``tokens``: characters and end) under the two most probable classes (``probabilities`` (C,)): the n-gram
        generative member's where there is one, else the recurrent one's; None without either."""
        if not self.model.bayes_members:
            return None
        first, second = probabilities.topk(2).indices.tolist()
        log_likelihoods = self.model.bayes_members[0].token_log_likelihoods(ids.expand(2, -1), lengths.expand(2),
                                                                            torch.tensor([first, second]))
        return Evidence((self.labels[first], self.labels[second]), tokens,
                        (log_likelihoods[0] - log_likelihoods[1]).tolist())

    def evaluate(self, data: LabelledTexts) -> dict:
        """Metrics on the test split of ``data``, or on every row when it has no split column."""
        if data.labels is None:
            raise UsageError(f"{data.path}: no label column to evaluate against")
        texts, labels = data.subset("test") if data.splits is not None else (data.texts, data.labels)
        if not texts:
            raise UsageError(f"{data.path}: the test split is empty")
        unknown = sorted(set(labels) - set(self.labels))
        if unknown:
            raise UsageError(f"{data.path}: labels {unknown} are not among the model's labels {self.labels}")
        index = {label: i for i, label in enumerate(self.labels)}
        predictions = self.probabilities(texts).argmax(1)
        metrics = classification_metrics(predictions, torch.tensor([index[label] for label in labels]), self.labels)
        return {"split": "test" if data.splits is not None else "all", **metrics}


def split_stack_name(name: str) -> str:
    """A parameter's name in the members' former layout, their layers in one ElmanRNN ``rnn``, -> its name
    now: layer 0 in ``bottom``, layers 1.. in ``upper`` (counted from 0 there). Other names stay."""
    match = re.fullmatch(r"(recurrent\.\d+\.)rnn\.(\w+_l)(\d+)(_reverse)?", name)
    if match is None:
        return name
    member, parameter, layer, reverse = match.groups()
    layer = int(layer)
    return f"{member}{'upper' if layer else 'bottom'}.{parameter}{max(layer - 1, 0)}{reverse or ''}"


def load_classifier(directory: Path, config: dict, state: dict, vocabulary: Vocabulary) -> Classifier:
    with fitting_configuration(directory):
        options = dict(config["model"])
        if "members" not in options:  # written before classifiers were ensembles: one recurrent network
            options.update(members=1, bag_ngrams=())
            state = {f"recurrent.0.{name}": tensor for name, tensor in state.items()}
        if "lm_loss_weight" not in options:  # written before the LM loss: each member's stack in one piece
            options.update(lm_loss_weight=0.0)
            state = {split_stack_name(name): tensor for name, tensor in state.items()}
        if "generative_hidden_size" not in options:  # written before the generative member
            options.update(generative_hidden_size=0)
        if "generative_ngram_order" not in options:  # written before the n-gram generative member
            options.update(generative_ngram_order=0)
        model = SequenceClassifier(model_config(ClassifierConfig, {**config, "model": options}, directory))
        if "member_weights" not in state:  # written before the pool's weights were fitted: equal weights
            state = {**state, "member_weights": model.member_weights}
        if "prior_shift" in state and "log_prior" in state:  # written while a shift from the prior moved decisions
            state = {**{name: tensor for name, tensor in state.items() if name not in ("prior_shift", "log_prior")},
                     "decision_bias": -state["prior_shift"] * state["log_prior"]}
        if "decision_bias" not in state:  # written before decisions were biased: none
            state = {**state, "decision_bias": model.decision_bias}
        model.load_state_dict(state)
        labels = list(config["labels"])
        max_length = int(config["max_length"])
    if len(labels) != model.config.num_classes or len(vocabulary) != model.config.vocab_size:
        raise CheckpointError(f"{directory}: labels or vocabulary do not match the model's sizes")
    return Classifier(model, vocabulary, labels, max_length, config)
