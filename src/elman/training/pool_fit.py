"""The classifier's pool, fitted on held-out rows: each member's weight in the weighted geometric mean
(``elman.models.classifier.ensemble``) and, for a generative member, how much of the class prior it keeps.
Fitted during selection after every validation (``fit_pool``), and once more when a generative member joins
the pool."""

from __future__ import annotations

import torch
from torch import nn

from elman.data.classification import Split
from elman.models.classifier import SequenceClassifier, batched_logits, ensemble

MAX_LOG_WEIGHT = 4.0  # bound of the fitted log-weights (see fit_member_weights)


def fit_pool(model: SequenceClassifier, rows: Split, generative: bool) -> torch.Tensor:
    """Fit ``model``'s pool on the held-out ``rows``: the weights of the members it scores (all of them, or
    all but the generative member with ``generative=False``) and, with the generative member, its prior
    weight. Returns the pool's logits (N, C) on ``rows``."""
    member_logits = batched_logits(model, rows.ids, rows.lengths, per_member=True, generative=generative)
    log_prior = model.generative.log_prior if generative and model.generative is not None else None
    weights, prior_change = fit_member_weights(member_logits, rows.targets, log_prior)
    model.member_weights[: len(weights)] = weights
    if log_prior is not None:
        model.generative.prior_weight += prior_change
        member_logits[-1] += prior_change * log_prior
    return ensemble(member_logits, weights)


def fit_member_weights(member_logits: torch.Tensor, targets: torch.Tensor, log_prior: torch.Tensor | None = None,
                       ) -> tuple[torch.Tensor, float]:
    """The ensemble's pool weights (M,) that minimise its log-loss on held-out rows (see ``ensemble``):
    member_logits (M, N, C), targets (N,). With one member this is temperature scaling. Given the class
    prior's logarithm ``log_prior`` (C,), the last member is a generative one (``GenerativeMember``) and the
    fit also moves how much of the prior it keeps: returns (the weights, the change of its ``prior_weight``),
    the change 0.0 without ``log_prior``.

    The log-weights have a standard normal prior (the fit is its maximum a posteriori) and stay within
    [-4, 4]: early in training members can be right yet barely confident, so that the best weights lie far
    out, and rows that the members already separate perfectly would pull them to infinity; the line search
    must not follow them there (float32 overflows) nor let a member that has hardly learnt anything count
    for much. On thousands of rows the prior hardly matters. The change of the prior's weight has the same
    prior and bounds."""
    member_logits = member_logits.double()
    log_weights = torch.zeros(member_logits.shape[0], dtype=torch.float64, requires_grad=True)
    prior_change = torch.zeros((), dtype=torch.float64, requires_grad=log_prior is not None)
    optimizer = torch.optim.LBFGS([log_weights, *([prior_change] if log_prior is not None else [])], max_iter=100,
                                  line_search_fn="strong_wolfe")

    def weights() -> torch.Tensor:
        return log_weights.clamp(-MAX_LOG_WEIGHT, MAX_LOG_WEIGHT).exp()

    def moved(logits: torch.Tensor) -> torch.Tensor:
        if log_prior is None:
            return logits
        change = prior_change.clamp(-MAX_LOG_WEIGHT, MAX_LOG_WEIGHT) * log_prior.double()
        return torch.cat([logits[:-1], (logits[-1] + change).unsqueeze(0)])

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        log_loss = nn.functional.cross_entropy(ensemble(moved(member_logits).log_softmax(dim=2), weights()), targets)
        loss = log_loss + (log_weights.square().sum() + prior_change.square()) / (2 * targets.numel())
        loss.backward()
        return loss

    optimizer.step(objective)
    return weights().detach().float(), float(prior_change.detach().clamp(-MAX_LOG_WEIGHT, MAX_LOG_WEIGHT))
