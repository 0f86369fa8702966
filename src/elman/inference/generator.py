"""A trained character language model ready to use: ``elman.load(DIR).generate(prime="ROMEO:")``."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import torch
from torch import Tensor

from elman.checkpoint import CheckpointError, fitting_configuration, model_config
from elman.data.batches import MAX_EVALUATION_TOKENS, length_bucketed_batches, trim
from elman.data.reader import LabelledTexts, normalise_text
from elman.data.vocabulary import BOS, EOS, SPECIALS, Vocabulary, vectorize
from elman.errors import UsageError, UsageTypeError
from elman.inference.classifier import Classifier, Prediction
from elman.inference.inspection import Inspection
from elman.layer.fused import compiled_generate
from elman.metrics import loss_report
from elman.models.language_model import (
    LanguageModel,
    LanguageModelConfig,
    condition_log_likelihoods,
    line_loss,
    log_frequencies,
    stream_loss,
)

MAX_GENERATE_CHARS = 100_000
MAX_SAMPLES = 1_000
MAX_GUIDED_ROWS = 100_000  # samples times conditions: guidance runs the model once per condition for each sample
CLASSIFY_BATCH = 256  # texts per model call in classify, each read once per condition


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """Draw one index per row of ``logits`` (B, V).

    temperature: divides the logits; 0 always takes the most likely index. top_k: only the k most likely
    indices are drawn from. top_p (nucleus): only the smallest set of most likely indices whose
    probabilities sum to at least p. Both cuts apply after the temperature; the rest is renormalised.
    """
    if temperature == 0:
        return logits.argmax(1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[1]:
        kth = logits.topk(top_k, dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=1, descending=True)
        probabilities = sorted_logits.softmax(1)
        before = probabilities.cumsum(1) - probabilities  # mass of the more likely indices
        sorted_logits = sorted_logits.masked_fill(before >= top_p, float("-inf"))  # the first always stays
        logits = torch.full_like(logits, float("-inf")).scatter(1, order, sorted_logits)
    return torch.multinomial(logits.softmax(1), 1, generator=generator).squeeze(1)


class ConditionGuidance:
    """Steers a conditioned model's samples towards their condition by the model's own judgement of it.

    The model gives the next character's log-probabilities under every condition c'. Read with a uniform
    prior over the C conditions, the prefix so far gives a posterior ``q(c' | x_<t)`` proportional to
    ``prod_s p(x_s | x_<s, c')``, and the mixture ``p(x_t | x_<t) = sum_c' q(c' | x_<t) p(x_t | x_<t, c')``
    is the next character with the condition unknown. Sampling for condition c with strength ``g`` draws
    from

        log p_g(x_t) = (1 + g) log p(x_t | x_<t, c) - g log p(x_t | x_<t)  (+ a normalising constant)
                     = log p(x_t | x_<t, c) + g [log q(c | x_<=t) - log q(c | x_<t)],

    so each character is favoured by how much it raises the model's belief in c: the contrast of
    classifier-free guidance, with the model's mixture over conditions as the unconditioned model. g = 0 is
    plain sampling. Each sample runs as C rows, one per condition (row ``n * C + c'``), all fed the
    characters drawn for sample n.
    """

    def __init__(self, condition: int, num_conditions: int, strength: float, num_samples: int):
        self.condition = condition
        self.num_conditions = num_conditions
        self.strength = strength
        self.num_samples = num_samples
        self.log_posterior = None  # (N, C) log q(c' | prefix)
        self.log_probs = None  # (N, C, V) the last step's next-character log-probabilities under each condition

    def rows(self) -> Tensor:
        """(N * C,) the condition of each row the model runs."""
        return torch.arange(self.num_conditions).repeat(self.num_samples)

    def read_context(self, logits: Tensor, ids: list[int]) -> None:
        """The posterior after the context ``ids`` (the start symbol and the prime), from the model's
        logits (N * C, T, V) over it."""
        read = torch.tensor(ids[1:]).expand(logits.shape[0], -1)  # what each step predicted
        log_likelihood = logits[:, :-1].log_softmax(2).gather(2, read[:, :, None]).sum((1, 2))
        self.log_posterior = log_likelihood.view(self.num_samples, self.num_conditions).log_softmax(1)

    def steer(self, logits: Tensor) -> Tensor:
        """Next-character logits (N * C, V) of every row -> guided logits (N, V) of every sample."""
        self.log_probs = logits.log_softmax(1).view(self.num_samples, self.num_conditions, -1)
        own = self.log_probs[:, self.condition]
        mixture = (self.log_posterior[:, :, None] + self.log_probs).logsumexp(1)
        return own + self.strength * (own - mixture)

    def observe(self, chosen: Tensor) -> Tensor:
        """Update the posterior with the characters chosen (N,) after ``steer``; -> the rows' next inputs
        (N * C,)."""
        chosen_log_probs = self.log_probs.gather(2, chosen[:, None, None].expand(-1, self.num_conditions, 1))
        self.log_posterior = (self.log_posterior + chosen_log_probs.squeeze(2)).log_softmax(1)
        return chosen.repeat_interleave(self.num_conditions)


def check_sampling_options(length: int, temperature: float, top_k: int | None, top_p: float | None,
                           num_samples: int, seed: int | None, guidance: float = 0.0) -> None:
    if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= MAX_GENERATE_CHARS:
        raise UsageError(f"length must be an integer from 0 to {MAX_GENERATE_CHARS}, got {length!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 1 <= num_samples <= MAX_SAMPLES:
        raise UsageError(f"num_samples must be an integer from 1 to {MAX_SAMPLES}, got {num_samples!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 100:
        raise UsageError(f"temperature must be a number from 0 to 100 (0: always the most likely), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise UsageError(f"top_k must be a positive integer, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise UsageError(f"top_p must be a number in (0, 1], got {top_p!r}")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0 <= guidance <= 100:
        raise UsageError(f"guidance must be a number from 0 to 100 (0: plain sampling), got {guidance!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise UsageError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}")


class TextGenerator:
    """A trained character language model: ``generate`` samples text, ``evaluate`` scores a file.

    ``kind`` is "text" for a model of one long text (generation continues the prime for ``length``
    characters) or "lines" for a model of separate lines such as names (generation starts a new line
    with the prime and stops at its end, or after ``length`` characters).
    """

    def __init__(self, model: LanguageModel, vocabulary: Vocabulary, kind: str, conditions: list[str] | None,
                 max_length: int, config: dict):
        self.model = model.eval()
        self.vocabulary = vocabulary
        self.kind = kind
        self.conditions = conditions
        self.max_length = max_length
        self.config = config
        self._never = torch.tensor([vocabulary.index(s) for s in SPECIALS if not (kind == "lines" and s == EOS)])

    def encode_prime(self, prime: str, what: str = "prime") -> list[int]:
        """Character ids of an NFC-normalised prime (as ``clean_prime`` gives it); ``what`` names it in errors."""
        if len(prime) > MAX_GENERATE_CHARS:
            raise UsageError(f"the {what} has {len(prime)} characters; the limit is {MAX_GENERATE_CHARS}")
        unknown = self.vocabulary.unknown_characters(prime)
        if unknown:
            known = "".join(t for t in self.vocabulary.tokens if t not in SPECIALS)
            raise UsageError(f"the {what} contains characters the model never saw: {unknown}; it knows {known!r}")
        return self.vocabulary.indices(prime)

    @staticmethod
    def clean_prime(prime: str) -> str:
        """The prime in the normal form the training text was read in (NFC); kept otherwise as it is."""
        if not isinstance(prime, str):
            raise UsageTypeError(f"prime must be a string, got {type(prime).__name__}")
        return unicodedata.normalize("NFC", prime)

    def condition_index(self, condition: str | None) -> int | None:
        if self.conditions is None:
            if condition is not None:
                raise UsageError("this model is not conditioned; leave out the condition")
            return None
        if condition is None:
            raise UsageError(f"this model is conditioned; give a condition, one of {self.conditions}")
        if condition not in self.conditions:
            raise UsageError(f"unknown condition {condition!r}; this model knows {self.conditions}")
        return self.conditions.index(condition)

    def context(self, prime: str, condition: str | None, what: str = "prime") -> tuple[list[int], Tensor | None]:
        """(ids the model reads before sampling, condition index tensor (1,) or None)."""
        ids = self.encode_prime(prime, what)
        index = self.condition_index(condition)
        if self.kind == "lines":
            ids = [self.vocabulary.index(BOS), *ids]
        elif not ids:  # a long-text model starts as after a line break (or its most common character)
            ids = [self.vocabulary.index("\n") if "\n" in self.vocabulary.tokens else len(SPECIALS)]
        return ids, None if index is None else torch.tensor([index])

    @torch.no_grad()
    def generate(self, prime: str = "", length: int | None = None, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, num_samples: int = 1, seed: int | None = None,
                 condition: str | None = None, guidance: float = 0.0) -> list[str]:
        """``num_samples`` texts, each the prime followed by up to ``length`` sampled characters (default:
        500 for a long-text model, the training line length for a line model, which also stops at the
        line's end). The same ``seed`` gives the same texts. ``guidance`` > 0 (conditioned models; 1-2 is
        a good range) makes the samples more typical of their condition (``ConditionGuidance``)."""
        length = (500 if self.kind == "text" else self.max_length) if length is None else length
        check_sampling_options(length, temperature, top_k, top_p, num_samples, seed, guidance)
        prime = self.clean_prime(prime)
        ids, condition_ids = self.context(prime, condition)
        if guidance and condition_ids is None:
            raise UsageError("guidance steers a conditioned model towards its condition; this model is not "
                             "conditioned, leave guidance at 0")
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        guide = None
        if guidance:
            if num_samples * len(self.conditions) > MAX_GUIDED_ROWS:
                raise UsageError(f"guidance runs every sample under each of the {len(self.conditions)} conditions; "
                                 f"{num_samples} samples make more than {MAX_GUIDED_ROWS} rows, ask for fewer")
            guide = ConditionGuidance(int(condition_ids), len(self.conditions), guidance, num_samples)
            conditions = guide.rows()
        else:
            conditions = None if condition_ids is None else condition_ids.expand(num_samples)
        logits, state = self.model(torch.tensor([ids]).expand(num_samples if guide is None else len(conditions), -1),
                                   conditions=conditions)
        if guide is not None:
            guide.read_context(logits, ids)
        if guide is None and self._samples_compiled(state):
            sampled = self._sample_compiled(logits[:, -1], state, conditions, length, temperature, top_k, top_p,
                                            generator)
        else:
            sampled = self._sample(logits[:, -1], state, conditions, guide, length, temperature, top_k, top_p,
                                   generator)
        return [prime + self._decode_until_end(row) for row in sampled.tolist()]

    def _sample(self, logits: Tensor, state: Tensor, conditions: Tensor | None, guide: ConditionGuidance | None,
                length: int, temperature: float, top_k: int | None, top_p: float | None,
                generator: torch.Generator) -> Tensor:
        """The sampling loop, from the logits (B, V) and state (L, B, H) after the prime: the drawn ids
        (B, length), <eos> after a row's end. A guided run's rows are C per sample (``ConditionGuidance``)."""
        samples = logits.shape[0] if guide is None else guide.num_samples
        sampled = torch.zeros(samples, length, dtype=torch.int64)
        finished = torch.zeros(samples, dtype=torch.bool)
        eos = self.vocabulary.index(EOS)
        for position in range(length):
            if guide is not None:
                logits = guide.steer(logits)
            logits[:, self._never] = float("-inf")
            chosen = sample_next(logits, temperature, top_k, top_p, generator)
            chosen = chosen.masked_fill(finished, eos)
            sampled[:, position] = chosen
            finished |= chosen == eos
            if self.kind == "lines" and bool(finished.all()):
                break
            inputs = chosen if guide is None else guide.observe(chosen)
            logits, state = self.model(inputs[:, None], state, conditions=conditions)
            logits = logits[:, -1]
        return sampled

    def _samples_compiled(self, state: Tensor) -> bool:
        """Whether the sampling loop can run compiled (``_sample_compiled``): where each of its steps would."""
        rows, width = state.shape[1], self.model.config.embedding_dim
        return (compiled_generate is not None and not self.model.training
                and self.model.rnn.step_is_compiled(self.model.embedding.weight.new_empty(rows, width), state))

    def _sample_compiled(self, logits: Tensor, state: Tensor, conditions: Tensor | None, length: int,
                         temperature: float, top_k: int | None, top_p: float | None,
                         generator: torch.Generator) -> Tensor:
        """``_sample`` without guidance in one compiled call (``generate`` in _loops.cpp): the same operations,
        so the same characters for a seed, without the Python between them."""
        model = self.model
        condition_input = logits.new_empty(0) if conditions is None else model.condition_inputs(conditions)
        return compiled_generate(logits, state.contiguous(), model.embedding.weight, condition_input,
                                 *model.rnn.step_operands(), model.output.weight, model.output.bias, self._never,
                                 float(temperature), top_k or 0, 1.0 if top_p is None else float(top_p), length,
                                 self.vocabulary.index(EOS), self.kind == "lines", generator)

    @property
    def classifies(self) -> bool:
        """Whether ``classify`` can read texts as this model's conditions: a conditioned model of lines only."""
        return self.conditions is not None and self.kind == "lines"

    @torch.no_grad()
    def classify(self, texts: str | list[str], top_k: int = 3, prior: str = "training") -> list[Prediction]:
        """A conditioned line model read as a classifier by Bayes' rule: for each text its ``top_k`` most
        probable conditions, p(c | text) proportional to p(text | c) p(c), with p(c) the conditions'
        frequencies in the training lines (``prior="training"``) or equal (``prior="uniform"``). The text is
        read as a whole line, its end included."""
        if not self.classifies:
            raise UsageError("this language model cannot classify: only a conditioned model of lines (--task lm "
                             "--condition-column) reads a text under each condition; or train a classifier "
                             "(--task classify)")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise UsageError(f"top_k must be a positive integer, got {top_k!r}")
        log_prior = self._log_prior(prior)
        texts = Classifier.clean(texts)
        for text in texts:
            self.encode_prime(text, what="text")  # refuses characters the model never saw
        ids, lengths = vectorize(texts, self.vocabulary, None)
        log_posterior = torch.empty(len(texts), len(self.conditions))
        self.model.eval()
        for rows in length_bucketed_batches(lengths, CLASSIFY_BATCH, max_tokens=MAX_EVALUATION_TOKENS):
            log_posterior[rows] = condition_log_likelihoods(self.model, trim(ids[rows], lengths[rows]), lengths[rows])
        probabilities = (log_posterior + log_prior).softmax(1)
        values, indices = probabilities.topk(min(top_k, len(self.conditions)), dim=1)
        return [Prediction(text, [(self.conditions[i], p) for p, i in zip(row_p, row_i, strict=True)])
                for text, row_p, row_i in zip(texts, values.tolist(), indices.tolist(), strict=True)]

    def _log_prior(self, prior: str) -> Tensor:
        """log p(c) (C,): ``"training"``, the training lines' frequencies; ``"uniform"``, equal."""
        if prior == "uniform":
            return torch.zeros(len(self.conditions))
        if prior != "training":
            raise UsageError(f"prior must be 'training' or 'uniform', got {prior!r}")
        counts = self.config.get("condition_counts")
        if counts is None:
            raise UsageError("this model was saved without its conditions' frequencies in training (before elman "
                             "kept them); classify it with a uniform prior (--uniform-prior, prior='uniform')")
        return log_frequencies(torch.tensor(counts))

    @torch.no_grad()
    def inspect(self, text: str, condition: str | None = None) -> Inspection:
        """The next-character distribution after each character of ``text``, and the hidden states. A line
        model reads the line's start first (``"<bos>"`` leads ``characters``): what it expects the first
        character to be (under ``condition``) is part of the picture."""
        text = self.clean_prime(text)
        if not text:
            raise UsageError("give a text to inspect")
        ids, conditions = self.context(text, condition, what="text")
        states, _ = self.model.hidden_states(torch.tensor([ids]), conditions=conditions)
        read = [BOS, *text] if self.kind == "lines" else list(text)
        states = states[-len(read) :, 0]
        probabilities = self.model.output(states).softmax(-1)
        return Inspection("lm", read, states.numpy(), probabilities.numpy(), list(self.vocabulary.tokens))

    def _decode_until_end(self, ids: list[int]) -> str:
        eos = self.vocabulary.index(EOS)
        return self.vocabulary.decode(ids[: ids.index(eos)] if eos in ids else ids)

    def evaluate_text(self, text: str, progress: bool = False) -> dict:
        """Loss over a whole text read statefully, as one long pass (``progress``: a bar over it)."""
        if self.kind != "text":
            raise UsageError("this model was trained on separate lines; evaluate it on a CSV or line file")
        ids = torch.tensor(self.vocabulary.indices(text), dtype=torch.int64)
        if ids.shape[0] < 2:
            raise UsageError("the text has fewer than two characters; nothing to predict")
        return {**loss_report(stream_loss(self.model, ids, progress=progress)), "characters": ids.shape[0] - 1,
                "unknown_characters": int((ids == 1).sum())}

    def evaluate_lines(self, data: LabelledTexts) -> dict:
        """Loss per predicted token over the test split of ``data``, or every line when it has no split
        column; ``characters`` counts the predictions: each character and each line's end."""
        if self.kind != "lines":
            raise UsageError("this model was trained on one long text; evaluate it on a text file")
        rows = [i for i in range(len(data)) if data.splits is None or data.splits[i] == "test"]
        if not rows:
            raise UsageError(f"{data.path}: the test split is empty")
        texts = [normalise_text(data.texts[i]) for i in rows]
        ids, lengths = vectorize(texts, self.vocabulary, self.max_length + 2)
        conditions = None
        if self.conditions is not None:
            if data.labels is None:
                raise UsageError(f"{data.path}: this model is conditioned; the file needs its condition column")
            conditions = torch.tensor([self.condition_index(data.labels[i]) for i in rows])
        return {**loss_report(line_loss(self.model, ids, lengths, conditions)),
                "characters": int(lengths.sum()) - len(rows), "lines": len(rows),
                "split": "all" if data.splits is None else "test", "unknown_characters": int((ids == 1).sum())}


def load_generator(directory: Path, config: dict, state: dict, vocabulary: Vocabulary) -> TextGenerator:
    with fitting_configuration(directory):
        model = LanguageModel(model_config(LanguageModelConfig, config, directory))
        model.load_state_dict(state)
        kind = config["kind"]
        conditions = None if config.get("conditions") is None else list(config["conditions"])
        max_length = int(config["max_length"])
    if kind not in ("text", "lines") or len(vocabulary) != model.config.vocab_size or \
            len(conditions or []) != model.config.num_conditions:
        raise CheckpointError(f"{directory}: kind, vocabulary or conditions do not match the model")
    return TextGenerator(model, vocabulary, kind, conditions, max_length, config)
