"""The classifier's pool, fitted on held-out rows: each member's weight in the weighted geometric mean
(``elman.models.classifier.ensemble``) and, for each member read by Bayes' rule, how much of the class prior
it keeps. Fitted during selection after every validation (``fit_pool``), and once more when a generative
member joins the pool; then a bias of each class's log probability for the pool's decisions
(``fit_decision_bias``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from elman.data.classification import Split
from elman.metrics import classification_metrics
from elman.models.classifier import BayesRule, SequenceClassifier, batched_logits, ensemble

MAX_LOG_WEIGHT = 4.0  # bound of the fitted log-weights (see fit_member_weights)
# choose_decision_bias's candidates of one class's bias, in nats, and its most rounds over all classes; it
# stops earlier when a round changes nothing (docs/measurements.md, "The decision bias")
BIAS_STEPS = torch.arange(-30, 31, dtype=torch.float64) / 10
MAX_SWEEPS = 10


def fit_pool(model: SequenceClassifier, rows: Split, generative: bool) -> torch.Tensor:
    """Fit ``model``'s pool on the held-out ``rows``: the weights of the members it scores (all of them, or
    all but the generative member with ``generative=False``) and the prior weight of each Bayes' rule member
    among them. Returns the pool's logits (N, C) on ``rows``."""
    member_logits = batched_logits(model, rows.ids, rows.lengths, per_member=True, generative=generative)
    members = model.members[: member_logits.shape[0]]
    log_priors = torch.stack([member.log_prior if isinstance(member, BayesRule) else torch.zeros(member_logits.shape[2])
                              for member in members])
    weights, prior_changes = fit_member_weights(member_logits, rows.targets, log_priors)
    model.member_weights[: len(weights)] = weights
    for member, change in zip(members, prior_changes.tolist(), strict=True):
        if isinstance(member, BayesRule):
            member.prior_weight += change
    return ensemble(member_logits + prior_changes[:, None, None] * log_priors[:, None, :], weights)


def fit_member_weights(member_logits: torch.Tensor, targets: torch.Tensor, log_priors: torch.Tensor | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ensemble's pool weights (M,) that minimise its log-loss on held-out rows (see ``ensemble``):
    member_logits (M, N, C), targets (N,). With one member this is temperature scaling. Given ``log_priors``
    (M, C), the logarithm of the class prior of each member read by Bayes' rule (``BayesRule``) and zeros for
    the others, the fit also moves how much of the prior each of those keeps: returns (the weights, the change
    of each member's ``prior_weight`` (M,), 0 for the others and without ``log_priors``).

    The log-weights have a standard normal prior (the fit is its maximum a posteriori) and stay within
    [-4, 4]: early in training members can be right yet barely confident, so that the best weights lie far
    out, and rows that the members already separate perfectly would pull them to infinity; the line search
    must not follow them there (float32 overflows) nor let a member that has hardly learnt anything count
    for much. On thousands of rows the prior hardly matters. The changes of the prior weights have the same
    prior and bounds."""
    member_logits = member_logits.double()
    members = member_logits.shape[0]
    log_weights = torch.zeros(members, dtype=torch.float64, requires_grad=True)
    prior_changes = torch.zeros(members, dtype=torch.float64, requires_grad=log_priors is not None)
    optimizer = torch.optim.LBFGS([log_weights, *([prior_changes] if log_priors is not None else [])], max_iter=100,
                                  line_search_fn="strong_wolfe")

    def weights() -> torch.Tensor:
        return log_weights.clamp(-MAX_LOG_WEIGHT, MAX_LOG_WEIGHT).exp()

    def moved(logits: torch.Tensor) -> torch.Tensor:
        if log_priors is None:
            return logits
        changes = prior_changes.clamp(-MAX_LOG_WEIGHT, MAX_LOG_WEIGHT)
        return logits + changes[:, None, None] * log_priors.double()[:, None, :]

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        log_loss = nn.functional.cross_entropy(ensemble(moved(member_logits).log_softmax(dim=2), weights()), targets)
        loss = log_loss + (log_weights.square().sum() + prior_changes.square().sum()) / (2 * targets.numel())
        loss.backward()
        return loss

    optimizer.step(objective)
    return weights().detach().float(), prior_changes.detach().clamp(-MAX_LOG_WEIGHT, MAX_LOG_WEIGHT).float()


def fit_decision_bias(model: SequenceClassifier, rows: Split, labels: list[str]) -> dict:
    """Set ``model.decision_bias`` to the one ``choose_decision_bias`` finds from the pool's probabilities on the
    held-out ``rows``; returns {"bias": it, by label, "expected_score": accuracy + macro-F1 that the
    probabilities expect of its decisions, "unbiased_expected_score": of the unbiased ones, "metrics": its
    decisions' ``classification_metrics`` on the rows' labels}."""
    model.decision_bias.zero_()
    log_probabilities = batched_logits(model, rows.ids, rows.lengths)
    bias, expected, unbiased_expected = choose_decision_bias(log_probabilities)
    model.decision_bias.copy_(bias)
    return {"bias": {label: round(value, 2) for label, value in zip(labels, bias.tolist(), strict=True)},
            "expected_score": expected,
            "unbiased_expected_score": unbiased_expected,
            "metrics": classification_metrics((log_probabilities + bias).argmax(1), rows.targets, labels)}


def choose_decision_bias(log_probabilities: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """The pool's log probabilities (N, C), unbiased, on held-out rows -> (a bias (C,) whose decisions
    ``argmax(log_probabilities + bias)`` score the highest accuracy + macro-F1 that the probabilities themselves
    expect (``expected_score``), that score, the unbiased decisions' expected score).

    The most probable class maximises expected accuracy, but macro-F1 asks for more decisions for the small
    classes (for a class of F1 F, deciding for it pays from a probability of about F / 2 on: Lipton et al.,
    2014). The labels of the small classes' few held-out rows would choose that by chance; the calibrated
    probabilities of every row say it with less noise, so the labels take no part (docs/measurements.md, "The
    decision bias"). Coordinate ascent: each class's bias in turn, among ``BIAS_STEPS``, while the
    score rises."""
    log_probabilities = log_probabilities.double()
    probabilities = log_probabilities.exp()
    classes = log_probabilities.shape[1]
    bias = torch.zeros(classes, dtype=torch.float64)
    unbiased = best = float(expected_score(probabilities, log_probabilities.argmax(1)[None])[0])
    for _ in range(MAX_SWEEPS):
        before = best
        for c in range(classes):
            others = log_probabilities + bias
            others[:, c] = -math.inf
            best_other, other_class = others.max(1)
            to_c = log_probabilities[:, c] + BIAS_STEPS[:, None] > best_other  # (steps, N)
            scores = expected_score(probabilities, torch.where(to_c, c, other_class))
            step = int(scores.argmax())
            if float(scores[step]) > best + 1e-12:
                bias[c], best = BIAS_STEPS[step], float(scores[step])
        if best == before:
            break
    return bias.float(), best, unbiased


def expected_score(probabilities: torch.Tensor, decisions: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, C) of N rows and S sets of decisions for them (S, N) -> the accuracy + macro-F1
    that the probabilities expect of each set (S,): class c's true positives are the probability of c summed
    over the rows decided for c, its rows the probability of c summed over all rows, and F1 is 2 true positives
    / (rows + decisions), each divided by N (0 for a class with neither)."""
    sets, rows = decisions.shape
    picked = probabilities.gather(1, decisions.T).T  # (S, N): each decided class's probability
    true_positives = torch.zeros(sets, probabilities.shape[1], dtype=probabilities.dtype).scatter_add_(
        1, decisions, picked) / rows
    decided = torch.zeros_like(true_positives).scatter_add_(1, decisions, torch.ones_like(picked)) / rows
    both = probabilities.mean(0) + decided  # 0 only for a class of probability 0 (underflow) never decided
    f1 = torch.where(both > 0, 2 * true_positives / both.clamp(min=torch.finfo(both.dtype).tiny), 0.0)
    return true_positives.sum(1) + f1.mean(1)
