"""Sequence classifier: an ensemble of character Elman RNNs (characters -> embedding -> ElmanRNN -> pooled
states -> MLP -> class logits) and, optionally, a linear model over the text's bag of character n-grams and
a generative member, a character language model conditioned on the class and read by Bayes' rule.

Each member is trained on its own loss (an Elman RNN's with an auxiliary one: from its bottom layer it also
predicts each character's neighbours, see ``RecurrentMember``; the generative member's is its language-model
loss under the true class); the ensemble predicts a weighted geometric mean of the members' probabilities,
normalised, with the weights fitted on the validation split. Members that see the text differently make
different mistakes, so the pool beats each of them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from elman.data.batches import MAX_EVALUATION_TOKENS, length_bucketed_batches, trim
from elman.errors import UsageError
from elman.layer import ACTIVATIONS, ElmanRNN
from elman.layer.dropout import Dropout
from elman.models.language_model import (
    LanguageModel,
    LanguageModelConfig,
    condition_log_likelihoods,
    token_log_likelihoods,
)
from elman.models.ngram_language_model import UNK, NgramLanguageModel
from elman.options import non_negative_int, option, orders, positive_int

POOLINGS = ("last", "max", "mean")


@dataclass
class ClassifierConfig:
    vocab_size: int
    num_classes: int
    embedding_dim: int = option(64, "size of the character embeddings", type=positive_int)
    hidden_size: int = option(128, "units per layer", type=positive_int)
    num_layers: int = option(2, "stacked Elman layers", type=positive_int)
    bidirectional: bool = True
    # relu trains faster and better than tanh here (docs/measurements.md, "Units")
    nonlinearity: str = option("relu", "the recurrence's units", choices=ACTIVATIONS)
    dropout: float = option(0.2, "dropout between the layers (a classifier's: and in its head)", type=float)
    embedding_dropout: float | None = option(None, "dropout on the character embeddings (None: as --dropout)",
                                             type=float)
    # (docs/measurements.md, "Weight dropout")
    weight_dropout: float = option(0.3, "DropConnect on the recurrent weights W_hh in training", type=float)
    pooling: tuple[str, ...] = ("last", "max")  # any of POOLINGS, concatenated
    mlp_hidden: int = 256  # 0: a single linear layer
    ngrams: tuple[int, ...] = ()  # e.g. (2, 3): also embed the character n-grams ending at each step (hashed)
    ngram_buckets: int = 16384
    # An auxiliary loss in training: the bottom layer's states predict the next character (forward direction)
    # and the previous one (reverse direction), language modelling beside the classification (Rei, 2017)
    # (docs/measurements.md, "The auxiliary language-model loss")
    lm_loss_weight: float = option(0.3, "weight of the Elman RNNs' auxiliary loss, predicting each character's "
                                   "neighbours from the bottom layer; 0 turns it off", type=float)
    members: int = option(1, "Elman RNNs trained side by side, their probabilities pooled", type=positive_int)
    # One more member, linear over the text's hashed character n-grams; training fits it first, as a logistic
    # regression (elman.training.ngram_fit) (docs/measurements.md, "The n-gram member")
    bag_ngrams: tuple[int, ...] = option((1, 2, 3, 4), "n-gram orders of the linear bag-of-n-grams member, "
                                         "e.g. 1,2,3,4, or none", type=orders)
    bag_buckets: int = 32768  # as good as 65536 (docs/measurements.md, "The n-gram member")
    # (docs/measurements.md, "The generative member")
    generative_hidden_size: int = option(0, "units of the generative member, a character language model "
                                         "conditioned on the class and read by Bayes' rule; 0: no such member",
                                         type=non_negative_int)
    # counted, not trained: a second of fitting (docs/measurements.md, "The n-gram generative member")
    generative_ngram_order: int = option(5, "order of the n-gram generative member, a character n-gram language "
                                         "model per class (Kneser-Ney) read by Bayes' rule; 0: no such member",
                                         type=non_negative_int)

    def __post_init__(self):
        self.pooling = tuple(self.pooling)
        self.ngrams = tuple(self.ngrams)
        self.bag_ngrams = tuple(self.bag_ngrams)
        if self.lm_loss_weight < 0:
            raise UsageError(f"lm_loss_weight must be >= 0 (0: no language-model loss), got {self.lm_loss_weight}")
        if self.members < 1:
            raise UsageError(f"members must be at least 1 (the recurrent networks), got {self.members}")
        if any(n < 1 for n in self.bag_ngrams):
            raise UsageError(f"bag_ngrams are orders >= 1, got {self.bag_ngrams}")
        if any(n < 2 for n in self.ngrams):
            raise UsageError(f"ngrams are orders >= 2 (characters are always embedded), got {self.ngrams}")
        unknown = [p for p in self.pooling if p not in POOLINGS]
        if unknown or not self.pooling:
            raise UsageError(f"pooling must be a non-empty subset of {POOLINGS}, got {self.pooling}")


def hashed_ngrams(ids: Tensor, order: int, buckets: int) -> Tensor:
    """(B, T) character ids -> (B, T) bucket ids in [1, buckets) of the n-gram of ``order`` characters
    ending at each step (steps before the start count as padding); 0 at padded steps."""
    code = ids.clone()
    for back in range(1, order):
        previous = nn.functional.pad(ids, (back, 0))[:, : ids.shape[1]]
        code = (code * 1_000_003 + previous) % 2_147_483_647
    return torch.where(ids == 0, 0, 1 + code % (buckets - 1))


class RecurrentMember(nn.Module):
    """One Elman RNN classifier: ids (B, T) int64 with 0 as padding, lengths (B,) -> logits (B, num_classes).

    The features are, concatenated: "last", the final state of each direction (the forward direction at
    each sequence's last character, the reverse direction at its first); "max" and "mean", pooled over
    the valid steps of the top layer's output (T, B, D * H). Inside, the recurrence runs time-major.

    The stack is two ``ElmanRNN``s, the bottom layer and the layers above it (``upper``, with dropout
    between them as inside one stack), because in training the bottom layer's states also feed the language-
    model loss (``lm_loss_weight``): there the forward direction at step t has read characters 0..t only and
    predicts character t + 1, the reverse direction has read t..end and predicts t - 1. Above the bottom
    layer every state has seen the whole text, the character it would predict included.
    """

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        directions = 2 if config.bidirectional else 1
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=0)
        self.ngram_embeddings = nn.ModuleList(
            nn.Embedding(config.ngram_buckets, config.embedding_dim, padding_idx=0) for _ in config.ngrams
        )
        recurrence = {"hidden_size": config.hidden_size, "nonlinearity": config.nonlinearity,
                      "bidirectional": config.bidirectional, "weight_dropout": config.weight_dropout}
        self.bottom = ElmanRNN(config.embedding_dim, num_layers=1, **recurrence)
        self.upper = None
        if config.num_layers > 1:
            self.upper = ElmanRNN(directions * config.hidden_size, num_layers=config.num_layers - 1,
                                  dropout=config.dropout if config.num_layers > 2 else 0.0, **recurrence)
        self.neighbours = None
        if config.lm_loss_weight:  # per direction: bottom-layer state (H) -> logits of the neighbouring character
            self.neighbours = nn.ModuleList(nn.Linear(config.hidden_size, config.vocab_size)
                                            for _ in range(directions))
        self.dropout = Dropout(config.dropout)
        self.embedding_dropout = Dropout(config.dropout if config.embedding_dropout is None
                                         else config.embedding_dropout)
        features = len(config.pooling) * directions * config.hidden_size
        if config.mlp_hidden:
            self.head = nn.Sequential(nn.Linear(features, config.mlp_hidden), nn.ReLU(), Dropout(config.dropout),
                                      nn.Linear(config.mlp_hidden, config.num_classes))
        else:
            self.head = nn.Linear(features, config.num_classes)

    def embed(self, ids: Tensor) -> Tensor:
        """(B, T) -> (T, B, E), time-major as the recurrence runs: each character's embedding plus those of
        the n-grams ending at it."""
        embedded = self.embedding(ids.t())
        for order, table in zip(self.config.ngrams, self.ngram_embeddings, strict=True):
            embedded = embedded + table(hashed_ngrams(ids, order, self.config.ngram_buckets).t())
        return embedded

    def recurrence(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> (bottom-layer states (T, B, D * H), top-layer states (T, B, D * H), the top layer's final states
        (D, B, H))."""
        if self.ngram_embeddings or (self.training and self.embedding_dropout.p > 0):
            bottom, h_n = self.bottom(self.embedding_dropout(self.embed(ids)), lengths=lengths)
        else:  # the inputs are rows of the embedding table
            bottom, h_n = self.bottom.forward_from_table(self.embedding.weight, ids.t(), lengths=lengths)
        if self.upper is None:
            return bottom, bottom, h_n
        top, h_n = self.upper(self.dropout(bottom), lengths=lengths)
        return bottom, top, h_n[-self.bottom.num_directions:]

    def pool(self, states: Tensor, final_states: Tensor, lengths: Tensor) -> Tensor:
        """Top-layer states (T, B, D * H), its final states (D, B, H) -> the pooled features (B, F)."""
        pooled = []
        for kind in self.config.pooling:
            if kind == "last":
                pooled.append(final_states.transpose(0, 1).reshape(states.shape[1], -1))
            elif kind == "max":
                steps = torch.arange(states.shape[0], device=states.device)[:, None]
                valid = steps < lengths.to(states.device)[None, :]
                pooled.append(states.masked_fill(~valid.unsqueeze(2), float("-inf")).amax(0))
            else:  # padded steps of the states are zero
                pooled.append(states.sum(0) / lengths.to(states.device, states.dtype)[:, None])
        return pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=1)

    def features(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """-> (pooled features (B, F), top-layer states (T, B, D * H))."""
        _, top, final_states = self.recurrence(ids, lengths)
        return self.pool(top, final_states, lengths), top

    def forward(self, ids: Tensor, lengths: Tensor, lm_loss: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """-> logits (B, num_classes); with ``lm_loss``, (logits, ``language_model_loss``)."""
        bottom, top, final_states = self.recurrence(ids, lengths)
        logits = self.head(self.dropout(self.pool(top, final_states, lengths)))
        return (logits, self.language_model_loss(bottom, ids)) if lm_loss else logits

    def language_model_loss(self, bottom: Tensor, ids: Tensor) -> Tensor:
        """Bottom-layer states (T, B, D * H), ids (B, T) -> a scalar: ``lm_loss_weight`` times the sum over
        the rows of each row's mean cross-entropy of the forward direction's prediction of every next character
        (<eos> included), plus that of the reverse direction's prediction of every previous one (<bos>
        included). Summed over rows, as the classification loss is, so that rows shared out between processes
        add up to the same loss."""
        if self.neighbours is None:
            return bottom.new_zeros(())
        characters = ids.t()  # (T, B); padding (0) is no target
        hidden = self.config.hidden_size
        following = characters[1:]
        # (states, the characters they predict) of the forward and the reverse direction, each read by its own
        # head (a unidirectional member has only the first); a padded step's (zero) state predicts nothing
        tasks = [(bottom[:-1, :, :hidden], following),
                 (bottom[1:, :, hidden:], characters[:-1].masked_fill(following == 0, 0))]
        loss = sum(nn.functional.cross_entropy(head(self.dropout(states)).flatten(0, 1), targets.flatten(),
                                               ignore_index=0, reduction="none").view(targets.shape).sum(0)
                   for head, (states, targets) in zip(self.neighbours, tasks, strict=False))  # (B,)
        predictions_per_direction = (following != 0).sum(0).clamp(min=1)  # a row's length - 1
        return self.config.lm_loss_weight * (loss / predictions_per_direction).sum()


class NgramBag(nn.Module):
    """A linear model over the bag of the text's character n-grams (hashed, each counted once per position,
    <bos>/<eos> included, so "<bos>Mc" and "ov<eos>" are n-grams too): ids (B, T), lengths (B,) -> logits
    (B, num_classes) = X W + b, where X (B, buckets) holds, for each text, 1 / sqrt(number of its n-grams)
    times how often each bucket occurs in it. Training fits it as a logistic regression
    (``elman.training.ngram_fit``); inference sums the text's rows of W."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.orders, self.buckets = config.bag_ngrams, config.bag_buckets
        self.weights = nn.EmbeddingBag(config.bag_buckets, config.num_classes, mode="sum", padding_idx=0)
        nn.init.zeros_(self.weights.weight)
        self.bias = nn.Parameter(torch.zeros(config.num_classes))

    def grams(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """-> (bucket ids (B, G) of every n-gram, 0 for padding; each one's weight (B, G) in X)."""
        grams = torch.cat([hashed_ngrams(ids, order, self.buckets) for order in self.orders], dim=1)
        scale = (grams != 0).sum(1, keepdim=True).clamp(min=1).float().rsqrt()
        return grams, scale.expand(grams.shape)

    def design_matrix(self, ids: Tensor) -> Tensor:
        """X above for a whole split at once: sparse CSR (B, buckets), so that logits = X @ W + b."""
        grams, scale = self.grams(ids)
        present = grams != 0
        rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand(grams.shape)
        indices = torch.stack([rows[present], grams[present]])
        with warnings.catch_warnings():  # torch calls CSR "beta"; its product is a quarter faster than COO's
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
            coo = torch.sparse_coo_tensor(indices, scale[present], (ids.shape[0], self.buckets),
                                          check_invariants=True)
            return coo.coalesce().to_sparse_csr()  # coalescing sums an n-gram's repeats

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        grams, scale = self.grams(ids)
        return self.weights(grams, per_sample_weights=scale.contiguous()) + self.bias


class BayesRule(nn.Module):
    """A language model of the texts of each class, read as a classifier by Bayes' rule: ids (B, T)
    (``<bos> chars <eos>``, 0 as padding), lengths (B,) -> logits (B, num_classes),

        logits[b, c] = log p(text_b | c) + prior_weight * log p(c)

    log p(text | c) sums, over the text's characters and its end, log p(token | the tokens before it, c)
    (``log_likelihoods``; ``token_log_likelihoods(ids, lengths, classes)`` (B, T - 1) gives each term under each
    row's class in ``classes`` (B,), 0 at padding). ``log_prior`` (C,) holds the training split's class
    frequencies, ``prior_weight`` (1: Bayes' rule) how much of them the member keeps: training fits it with the
    pool's weights (the other members have learnt the prior already)."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.register_buffer("log_prior", torch.full((config.num_classes,), -math.log(config.num_classes)))
        self.register_buffer("prior_weight", torch.ones(()))

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        return self.log_likelihoods(ids, lengths) + self.prior_weight * self.log_prior


class GenerativeMember(BayesRule):
    """``BayesRule`` over a one-layer ``LanguageModel`` conditioned on the class: a text's state starts from its
    class's embedding, and the class's input embedding is added at every step. Each row is read once per
    class, all in one batch of B * num_classes rows."""

    def __init__(self, config: ClassifierConfig):
        super().__init__(config)
        self.language_model = LanguageModel(LanguageModelConfig(
            config.vocab_size, embedding_dim=config.embedding_dim, hidden_size=config.generative_hidden_size,
            num_layers=1, dropout=config.dropout, num_conditions=config.num_classes))

    def loss(self, ids: Tensor, lengths: Tensor, targets: Tensor) -> Tensor:
        """A scalar: the sum over the rows of each one's mean next-token cross-entropy under its true class
        (summed over rows, as the recurrent members' losses are)."""
        log_likelihoods = token_log_likelihoods(self.language_model, ids, lengths, targets).sum(1)
        return -(log_likelihoods / (lengths - 1).to(log_likelihoods.device)).sum()

    def log_likelihoods(self, ids: Tensor, lengths: Tensor) -> Tensor:
        return condition_log_likelihoods(self.language_model, ids, lengths)

    def token_log_likelihoods(self, ids: Tensor, lengths: Tensor, classes: Tensor) -> Tensor:
        return token_log_likelihoods(self.language_model, ids, lengths, classes)


class NgramGenerativeMember(BayesRule):
    """``BayesRule`` over an ``NgramLanguageModel`` of order ``generative_ngram_order``: counted (``fit``), not
    trained, and every class read in the same lookups."""

    def __init__(self, config: ClassifierConfig):
        super().__init__(config)
        self.ngrams = NgramLanguageModel(config.vocab_size, config.num_classes, config.generative_ngram_order)

    def fit(self, ids: Tensor, lengths: Tensor, targets: Tensor) -> None:
        self.ngrams.fit(ids, lengths, targets)

    def log_likelihoods(self, ids: Tensor, lengths: Tensor) -> Tensor:
        return self.evidence(ids, lengths).sum(1)

    def token_log_likelihoods(self, ids: Tensor, lengths: Tensor, classes: Tensor) -> Tensor:
        return self.evidence(ids, lengths).gather(2, classes.view(-1, 1, 1).expand(-1, ids.shape[1] - 1, 1)).squeeze(2)

    def evidence(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """(B, T - 1, C): each token's log p under each class, 0 at padding and at ``<unk>``. ``<unk>`` stands
        for the characters that no training text held, and the probability a class's model has for them is
        what its counts leave over: more the fewer texts the class had. Counted, an unseen character would
        speak for the small classes whatever the name (docs/measurements.md, "The n-gram generative member")."""
        return self.ngrams.token_log_likelihoods(ids, lengths).masked_fill((ids[:, 1:] == UNK)[..., None], 0.0)


# the buffers that training fits on the validation split, for the pool: a refit keeps them
POOL_BUFFERS = ("member_weights", "decision_bias",
                *(f"{member}.{buffer}" for member in ("generative", "ngram_generative")
                  for buffer in ("log_prior", "prior_weight")))


class SequenceClassifier(nn.Module):
    """ids (B, T) int64 with 0 as padding, lengths (B,) -> class logits (B, num_classes) of the ensemble (see
    ``ensemble``). ``per_member=True`` gives each member's logits (M, B, num_classes) instead: the recurrent
    members', then the n-gram bag's, the n-gram generative member's and the generative member's (each where
    configured). The generative member's Bayes scores read each row once per class (the n-gram generative
    member's are lookups): ``generative=False`` leaves them out. ``lm_loss=True`` gives what a training step
    needs: (the logits (M', B, C) of the recurrent members and the bag, the recurrent members' summed
    ``language_model_loss`` plus the generative member's ``loss`` under ``targets`` (B,)); the n-gram
    generative member, which counted the training rows, is left out there. ``member_weights`` (M,), a buffer
    saved with the weights, holds the pool's weights: 1/M until training fits them on the validation split;
    ``decision_bias`` (C,) a bias of each class's log probability for the pool's decisions (0 until training
    chooses it from the validation split; see ``pool``)."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.recurrent = nn.ModuleList(RecurrentMember(config) for _ in range(config.members))
        self.bag = NgramBag(config) if config.bag_ngrams else None
        self.ngram_generative = NgramGenerativeMember(config) if config.generative_ngram_order else None
        self.generative = GenerativeMember(config) if config.generative_hidden_size else None
        members = len(self.members)
        self.register_buffer("member_weights", torch.full((members,), 1.0 / members))
        self.register_buffer("decision_bias", torch.zeros(config.num_classes))

    @property
    def members(self) -> list[nn.Module]:
        return [*self.recurrent, *(member for member in (self.bag, self.ngram_generative, self.generative)
                                   if member is not None)]

    @property
    def bayes_members(self) -> list[BayesRule]:
        return [member for member in self.members if isinstance(member, BayesRule)]

    def features(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """-> (pooled features (B, M * F), top-layer states (T, B, M * D * H)) of the recurrent members."""
        pooled, states = zip(*(member.features(ids, lengths) for member in self.recurrent), strict=True)
        return torch.cat(pooled, dim=1), torch.cat(states, dim=2)

    def forward(self, ids: Tensor, lengths: Tensor, per_member: bool = False, lm_loss: bool = False,
                targets: Tensor | None = None, generative: bool = True) -> Tensor | tuple[Tensor, Tensor]:
        recurrent = [member(ids, lengths, lm_loss) for member in self.recurrent]
        if lm_loss:
            recurrent, lm_losses = zip(*recurrent, strict=True)
        scored = [self.bag] if lm_loss else [self.bag, self.ngram_generative, self.generative if generative else None]
        others = [member(ids, lengths) for member in scored if member is not None]
        members = [logits.float() for logits in [*recurrent, *others]]
        logits = members[0].unsqueeze(0) if len(members) == 1 else torch.stack(members)  # (M, B, C)
        if not lm_loss:
            return logits if per_member else self.pool(logits)
        if self.generative is None:
            return logits, sum(lm_losses)
        if targets is None:
            raise ValueError("lm_loss=True with a generative member needs the targets (its loss is under the true "
                             "class)")
        return logits, sum(lm_losses) + self.generative.loss(ids, lengths, targets)

    def pool(self, member_logits: Tensor) -> Tensor:
        """Members' logits (M, B, C) -> the pool's log class probabilities (B, C):

            log p(c | x) = ensemble(member_logits)[c] + decision_bias[c] - log Z(x)

        The ensemble's probabilities are calibrated (its weights are fitted by log-loss), so its most probable
        class is the decision of the highest expected accuracy; the bias moves decisions toward the small
        classes as far as expected accuracy + macro-F1 want (``elman.training.pool_fit.choose_decision_bias``).
        """
        pooled = ensemble(member_logits, self.member_weights[: member_logits.shape[0]])
        return (pooled + self.decision_bias).log_softmax(dim=1)

    def pool_state(self) -> dict[str, Tensor]:
        """The buffers that training fits on the validation split for the pool (a refit keeps them)."""
        return {name: tensor for name, tensor in self.state_dict().items() if name in POOL_BUFFERS}


def ensemble(member_logits: Tensor, weights: Tensor) -> Tensor:
    """Members' logits (M, B, C) and weights (M,) > 0 -> log class probabilities (B, C) of their weighted
    geometric pool:

        log p(c | x) = sum_m w_m log p_m(c | x) - log sum_c' exp(sum_m w_m log p_m(c' | x))

    A class wins only where no member rules it out, and a weight is also its member's inverse temperature,
    so an overconfident member can count for less (``elman.training.pool_fit``). On surnames.csv the
    equal-weight geometric pool beat the arithmetic mean of the probabilities on validation in each of
    three trained ensembles; fitted weights (then about 0.25 for the RNN, 1.0 for an n-gram bag trained by
    AdamW; with the bag fitted as a logistic regression about 0.2 and 0.6) gave higher accuracy than equal
    ones on validation, where they are fitted, and on the test split, which takes no part, in each of four
    (macro-F1: higher in two, within 0.007 in the others).
    A single member gives its logits times its weight (temperature scaling; their softmax is the pool)."""
    if member_logits.shape[0] == 1:
        return member_logits[0] * weights[0]
    return (weights[:, None, None] * member_logits.log_softmax(dim=2)).sum(dim=0).log_softmax(dim=1)


@torch.no_grad()
def batched_logits(model: SequenceClassifier, ids: Tensor, lengths: Tensor, batch_size: int = 512,
                   per_member: bool = False, generative: bool = True) -> Tensor:
    """Logits (N, C) for all rows of ``ids`` (N, T) in evaluation mode, in length-bucketed batches; each
    member's (M, N, C) with ``per_member`` (without the generative member's, ``generative=False``)."""
    model.eval()
    members = len(model.members) - (model.generative is not None and not generative)
    logits = torch.empty(members, ids.shape[0], model.config.num_classes)
    for batch in length_bucketed_batches(lengths, batch_size, max_tokens=MAX_EVALUATION_TOKENS):
        logits[:, batch] = model(trim(ids[batch], lengths[batch]), lengths[batch], per_member=True,
                                 generative=generative)
    return logits if per_member else model.pool(logits)
