"""The classifier's pool, fitted on held-out rows: each member's weight in the weighted geometric mean
(``elman.models.classifier.ensemble``) and, for each member read by Bayes' rule, how much of the class prior
it keeps. Fitted during selection after every validation (``fit_pool``), and once more when a generative
member joins the pool; then how far the pool's decisions move from the training prior (``fit_prior_shift``)."""

from __future__ import annotations

import torch
from torch import nn

from elman.data.classification import Split
from elman.metrics import classification_metrics
from elman.models.classifier import BayesRule, SequenceClassifier, batched_logits, ensemble

MAX_LOG_WEIGHT = 4.0  # bound of the fitted log-weights (see fit_member_weights)
# the candidates of fit_prior_shift: 1 would aim at balanced accuracy (docs/measurements.md, "The prior shift")
PRIOR_SHIFTS = tuple(step / 20 for step in range(11))


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


def fit_prior_shift(model: SequenceClassifier, rows: Split, labels: list[str]) -> dict:
    """Set ``model.prior_shift`` to the one ``choose_prior_shift`` picks on the held-out ``rows``; returns what
    that gives."""
    model.prior_shift.zero_()
    chosen = choose_prior_shift(batched_logits(model, rows.ids, rows.lengths), model.log_prior, rows.targets, labels)
    model.prior_shift.fill_(chosen["shift"])
    return chosen


def choose_prior_shift(logits: torch.Tensor, log_prior: torch.Tensor, targets: torch.Tensor, labels: list[str]
                       ) -> dict:
    """The pool's log probabilities (N, C), unshifted, on held-out rows -> the shift among ``PRIOR_SHIFTS``
    whose decisions ``argmax(logits - shift * log_prior)`` score the highest accuracy + macro-F1 there (the
    smallest of equals). Weights fitted by log-loss give calibrated probabilities, whose most probable class
    favours the large classes more than accuracy and macro-F1 want. Returns {"shift", "score",
    "unshifted_score", "metrics": the chosen decisions' ``classification_metrics``}."""
    scored = {}
    for shift in PRIOR_SHIFTS:
        metrics = classification_metrics((logits - shift * log_prior).argmax(1), targets, labels)
        scored[shift] = (metrics["accuracy"] + metrics["macro_f1"], metrics)
    shift = max(PRIOR_SHIFTS, key=lambda candidate: (scored[candidate][0], -candidate))
    return {"shift": shift, "score": scored[shift][0], "unshifted_score": scored[0.0][0], "metrics": scored[shift][1]}
