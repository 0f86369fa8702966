"""The n-gram language model per class, against a plain-Python Kneser-Ney written from the equations."""

import math
import random
from collections import Counter, defaultdict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from elman.models.ngram_language_model import BOS, NgramLanguageModel, binary_search, discounts, sorted_lookup

VOCAB, CLASSES = 9, 3  # ids 0 padding, 1 <unk>, 2 <bos>, 3 <eos>, 4..8 characters


def texts(seed: int, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``<bos> chars <eos>`` rows, padded; each class favours its own characters."""
    rng = random.Random(seed)
    targets = [rng.randrange(CLASSES) for _ in range(rows)]
    lines = [[2, *(rng.choice([4 + c, 4 + c, 5, 6, 7, 8]) for _ in range(rng.randint(1, 6))), 3] for c in targets]
    width = max(map(len, lines))
    ids = torch.tensor([line + [0] * (width - len(line)) for line in lines])
    return ids, torch.tensor([len(line) for line in lines]), torch.tensor(targets)


def reference(ids: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, order: int):
    """p(x | h, c) of interpolated Kneser-Ney with three discounts, from the module docstring's recursion."""
    grams = [defaultdict(Counter) for _ in range(order)]  # grams[k][(c, history of k tokens)][x]
    for row, length, c in zip(ids.tolist(), lengths.tolist(), targets.tolist(), strict=True):
        line = [BOS] * (order - 1) + row[:length]
        for t in range(order, len(line)):
            grams[order - 1][(c, tuple(line[t - order + 1 : t]))][line[t]] += 1
    for k in reversed(range(order - 1)):  # continuation counts: distinct tokens seen before h x
        for (c, history), following in grams[k + 1].items():
            for x in following:
                grams[k][(c, history[1:])][x] += 1
    discount = [discounts(torch.tensor([n for counter in grams[k].values() for n in counter.values()])).tolist()
                for k in range(order)]

    def probability(x: int, history: tuple, c: int) -> float:
        k = len(history)
        lower = 1 / (VOCAB - 2) if k == 0 else probability(x, history[1:], c)
        counter = grams[k].get((c, history))
        if not counter:
            return lower
        total = sum(counter.values())
        share = sum(discount[k][min(n, 3) - 1] for n in counter.values())
        n = counter.get(x, 0)
        return (max(n - (discount[k][min(n, 3) - 1] if n else 0), 0) + share * lower) / total

    return probability


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_every_token_gets_the_probability_of_the_kneser_ney_recursion(order):
    ids, lengths, targets = texts(0, 60)
    model = NgramLanguageModel(VOCAB, CLASSES, order)
    model.fit(ids, lengths, targets)
    probability = reference(ids, lengths, targets, order)
    # texts never counted, an unknown token among them: seen, partly seen and unseen histories
    queries, query_lengths, _ = texts(1, 30)
    queries[0, 2] = 1
    log_likelihoods = model.token_log_likelihoods(queries, query_lengths)  # (B, T - 1, C)
    for b, (row, length) in enumerate(zip(queries.tolist(), query_lengths.tolist(), strict=True)):
        line = [BOS] * (order - 1) + row[:length]
        for position in range(length - 1):  # the token after <bos> at position 0
            t = order + position
            expected = [math.log(probability(line[t], tuple(line[t - order + 1 : t]), c)) for c in range(CLASSES)]
            assert log_likelihoods[b, position].tolist() == pytest.approx(expected, abs=1e-5)
        assert log_likelihoods[b, length - 1 :].abs().sum() == 0  # padding


def test_each_class_distribution_sums_to_one_after_any_history():
    ids, lengths, targets = texts(2, 80)
    model = NgramLanguageModel(VOCAB, CLASSES, 4)
    model.fit(ids, lengths, targets)
    readable = [x for x in range(VOCAB) if x not in (0, BOS)]
    for history in ([2, 4, 5], [2, 8, 8], [2, 1, 7], [2]):  # counted, partly counted, with <unk>, empty
        rows = torch.tensor([[*history, x] for x in readable])
        log_probs = model.token_log_likelihoods(rows, torch.full((len(readable),), len(history) + 1))[:, -1]
        torch.testing.assert_close(log_probs.exp().sum(0), torch.ones(CLASSES))


def test_a_text_scores_alike_alone_and_padded_in_a_batch():
    ids, lengths, targets = texts(3, 40)
    model = NgramLanguageModel(VOCAB, CLASSES, 3)
    model.fit(ids, lengths, targets)
    batch = model.token_log_likelihoods(ids, lengths)
    for b in (0, 7, 21):
        alone = model.token_log_likelihoods(ids[b : b + 1, : int(lengths[b])], lengths[b : b + 1])
        torch.testing.assert_close(batch[b : b + 1, : int(lengths[b]) - 1], alone)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10_000), max_size=40, unique=True), st.lists(st.integers(-5, 10_005), max_size=30))
def test_the_lookup_and_the_exported_binary_search_find_exactly_the_keys_there(keys, queries):
    present = set(keys)
    keys, queries = torch.tensor(sorted(keys), dtype=torch.int64), torch.tensor(queries, dtype=torch.int64)
    position, found = sorted_lookup(keys, queries)
    assert found.tolist() == [query in present for query in queries.tolist()]
    assert torch.equal(keys[position[found]], queries[found]) and not position[~found].any()
    if len(keys):  # what an exported graph runs instead of searchsorted: the last key <= each query
        searched = binary_search(keys, queries)
        assert torch.equal(searched, (keys[None, :] <= queries[:, None]).sum(1).sub(1).clamp(min=0))


def test_discounts_follow_the_counts_of_counts():
    # n1..n4 = 4, 2, 1, 1: Y = 4 / 8; D(k) = k - (k + 1) Y n_(k+1) / n_k
    counts = torch.tensor([1, 1, 1, 1, 2, 2, 3, 4, 0, 0])
    assert discounts(counts).tolist() == pytest.approx([1 - 2 * 0.5 * 2 / 4, 2 - 3 * 0.5 * 1 / 2, 3 - 4 * 0.5 * 1])
    assert discounts(torch.tensor([1, 1, 2, 5])).tolist() == pytest.approx([2 / 4] * 3)  # no n3: one discount


def test_fitted_tables_load_into_a_fresh_model_and_foreign_ones_are_refused():
    ids, lengths, targets = texts(4, 50)
    fitted = NgramLanguageModel(VOCAB, CLASSES, 3)
    fitted.fit(ids, lengths, targets)
    fresh = NgramLanguageModel(VOCAB, CLASSES, 3)
    fresh.load_state_dict(fitted.state_dict())
    torch.testing.assert_close(fresh.token_log_likelihoods(ids, lengths), fitted.token_log_likelihoods(ids, lengths))
    broken = {**fitted.state_dict(), "ngram_log_probs": fitted.ngram_log_probs[:-1]}
    with pytest.raises(ValueError, match="do not fit together"):
        NgramLanguageModel(VOCAB, CLASSES, 3).load_state_dict(broken)


def test_before_a_fit_every_class_reads_the_uniform_distribution():
    ids, lengths, _ = texts(5, 4)
    log_likelihoods = NgramLanguageModel(VOCAB, CLASSES, 3).token_log_likelihoods(ids, lengths)
    real = torch.arange(ids.shape[1] - 1) < (lengths - 1)[:, None]
    assert torch.allclose(log_likelihoods[real], torch.full((int(real.sum()), CLASSES), -math.log(VOCAB - 2)))
