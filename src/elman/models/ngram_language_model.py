"""A character n-gram language model per class: interpolated Kneser-Ney with three discounts (Chen & Goodman,
1998), counted in one pass over the training texts and read by table lookups.

For a token x after the history h (its n - 1 preceding tokens, <bos> repeated before the text's start), in
class c, with h' the history without its oldest token:

    p_n(x | h, c) = (max(N(h x, c) - D_n(N(h x, c)), 0) + gamma(h, c) p_{n-1}(x | h', c)) / N(h, c)
    gamma(h, c)   = D_n(1) N_1(h ., c) + D_n(2) N_2(h ., c) + D_n(3) N_3+(h ., c)

where N(h x, c) counts h x in the class's texts at the top order and, below it, counts the distinct tokens
seen before h x (the continuation counts of Kneser-Ney); N(h, c) sums them over x; N_k(h ., c) counts the x
seen k times (3+: at least 3) after h; D_n(k) are each order's discounts, from its counts of counts over all
classes. A history the class never saw gives p_{n-1} unchanged; below order 1 lies the uniform distribution
over the tokens a text can hold (every token but padding and <bos>), so each class's p(. | h, c) sums to one.

Tables (buffers, their sizes set by the fit): every history seen in training, in any class, has an id (0: the
empty history) and a key ``parent id * V + token``, its parent being the history one token shorter and the
token the oldest one; every n-gram seen has the key ``history id * V + x``. Keys are sorted, the ids of a
longer history are larger than a shorter one's, and a lookup is a binary search (in an exported graph, one
of a fixed number of gathers). For each n-gram the table holds log p(x | h, c) of every class (V: the
vocabulary's size, C: the classes):

    history_keys         (H,)        int64, sorted; history id = 1 + position
    history_log_backoff  (H + 1, C)  log gamma(h, c) / N(h, c), 0 where the class never saw h
    ngram_keys           (K,)        int64, sorted
    ngram_log_probs      (K, C)      log p(x | h, c)

A token after a history seen at order n but not followed by it there is read at the longest order where it
was, plus the backoff weights of the longer histories: the same number as the recursion above.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from elman.data.vocabulary import SPECIALS

BOS, UNK = SPECIALS.index("<bos>"), SPECIALS.index("<unk>")
MIN_DISCOUNT = 0.1  # a floor, for counts of counts too few to estimate a discount from (tiny data sets)
TABLES = ("history_keys", "history_log_backoff", "ngram_keys", "ngram_log_probs")
# torch.compiler.is_exporting came with torch 2.6; before it, everything compiled reads by the exportable search
exporting = getattr(torch.compiler, "is_exporting", torch.compiler.is_compiling)


def sorted_lookup(keys: Tensor, queries: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted ``keys`` (K,) and ``queries`` (any shape) -> (position of each query in ``keys``, 0 where absent;
    whether it is there)."""
    if keys.numel() == 0:
        return torch.zeros_like(queries), torch.zeros_like(queries, dtype=torch.bool)
    if exporting():  # ONNX has no searchsorted
        position = binary_search(keys, queries)
    else:  # far faster in eager mode (docs/measurements.md, "The n-gram generative member")
        position = torch.searchsorted(keys, queries).clamp(max=keys.numel() - 1)
    found = keys[position] == queries
    return torch.where(found, position, 0), found


def binary_search(keys: Tensor, queries: Tensor) -> Tensor:
    """Sorted ``keys`` (K,), K > 0, and ``queries`` -> the position of the last key <= each query, or 0: a
    branchless binary search of a fixed number of gathers, which ONNX has."""
    position = torch.zeros_like(queries)
    step = 1 << (keys.numel() - 1).bit_length()
    while step:
        candidate = (position + step).clamp(max=keys.numel() - 1)
        position = torch.where(keys[candidate] <= queries, candidate, position)
        step >>= 1
    return position


def discounts(counts: Tensor) -> Tensor:
    """The counts of one order's n-grams (any shape, zeros ignored) -> its discounts D(1), D(2), D(3+) (3,),
    estimated from the counts of counts n_1..n_4 (Chen & Goodman's modified Kneser-Ney); where some n_k is 0
    (little data) one discount, n_1 / (n_1 + 2 n_2), serves for every count. Each is at least ``MIN_DISCOUNT``,
    so that every n-gram gives up some mass and no token after a history becomes impossible."""
    n = torch.stack([(counts == k).sum() for k in range(1, 5)]).double()
    single = n[0] / (n[0] + 2 * n[1]) if n[0] + n[1] > 0 else torch.tensor(0.5, dtype=torch.float64)
    if bool((n == 0).any()):
        return single.clamp(min=MIN_DISCOUNT).expand(3).float()
    k = torch.arange(1, 4, dtype=torch.float64)
    return (k - (k + 1) * single * n[1:] / n[:-1]).clamp(min=MIN_DISCOUNT).float()


class NgramLanguageModel(nn.Module):
    """ids (B, T) (``<bos> chars <eos>``, 0 as padding), lengths (B,) -> ``token_log_likelihoods`` (B, T - 1, C):
    log p of each token after <bos> under each class, 0 at padding. Empty until ``fit``."""

    def __init__(self, vocab_size: int, num_classes: int, order: int):
        super().__init__()
        if order < 1:
            raise ValueError(f"an n-gram model's order is at least 1, got {order}")
        self.vocab_size, self.num_classes, self.order = vocab_size, num_classes, order
        self.register_buffer("history_keys", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("history_log_backoff", torch.zeros(1, num_classes))
        self.register_buffer("ngram_keys", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("ngram_log_probs", torch.zeros(0, num_classes))

    def windows(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """-> (each predicted token with the n - 1 before it (B, T - 1, n), most recent last; which are real
        (B, T - 1): a token after <bos>, not padding)."""
        padded = nn.functional.pad(ids, (self.order - 1, 0), value=BOS)
        windows = padded.unfold(1, self.order, 1)[:, 1:]
        real = torch.arange(1, ids.shape[1], device=ids.device) < lengths.to(ids.device)[:, None]
        return windows, real

    def history_ids(self, windows: Tensor) -> list[Tensor]:
        """Windows (..., n) -> the id of each window's history of 0..n - 1 tokens (n tensors (...)), -1 for a
        history training never saw (and so every longer one: a key made from id -1 is below 0, and every key
        in the tables is 0 or more)."""
        ids = [torch.zeros_like(windows[..., 0])]
        for length in range(1, self.order):
            position, found = sorted_lookup(self.history_keys, ids[-1] * self.vocab_size + windows[..., -1 - length])
            ids.append(torch.where(found, position + 1, -1))
        return ids

    def token_log_likelihoods(self, ids: Tensor, lengths: Tensor) -> Tensor:
        windows, real = self.windows(ids, lengths)
        tokens = windows[..., -1]
        histories = torch.stack(self.history_ids(windows))  # (n, B, T - 1), by length
        seen = histories >= 0
        position, found = sorted_lookup(self.ngram_keys, histories * self.vocab_size + tokens)
        by_length = torch.arange(self.order, device=ids.device).view(-1, 1, 1)
        # the longest history the token was counted after (-1: none, the token is read from the uniform)
        longest = torch.where(found, by_length, -1).amax(0)
        if len(self.ngram_keys):
            counted = self.ngram_log_probs[position.gather(0, longest.clamp(min=0).unsqueeze(0)).squeeze(0)]
        else:  # before a fit
            counted = torch.zeros(*tokens.shape, self.num_classes, device=ids.device)
        counted = torch.where((longest >= 0)[..., None], counted, -math.log(self.vocab_size - 2))
        # plus the backoff weights of the longer histories it was not counted after (0 where never seen)
        backoff = self.history_log_backoff[histories.clamp(min=0)].masked_fill(~seen[..., None], 0.0)
        backed_off = backoff.masked_fill(~(by_length > longest)[..., None], 0.0).sum(0)
        return (counted + backed_off).masked_fill(~real[..., None], 0.0)

    @torch.no_grad()
    def fit(self, ids: Tensor, lengths: Tensor, targets: Tensor) -> None:
        """Count the texts ``ids`` (N, T), ``lengths`` (N,) of the classes ``targets`` (N,) and fill the tables
        (replacing what they held)."""
        windows, real = self.windows(ids, lengths)
        windows, classes = windows[real], targets.to(ids.device)[:, None].expand(real.shape)[real]  # (P, n), (P,)
        vocab, num_classes = self.vocab_size, self.num_classes
        history, history_keys = [torch.zeros_like(classes)], []  # each position's history id by length
        for length in range(1, self.order):
            keys, inverse = torch.unique(history[-1] * vocab + windows[:, -1 - length], return_inverse=True)
            history.append(1 + sum(len(k) for k in history_keys) + inverse)
            history_keys.append(keys)
        self.history_keys = torch.cat([torch.zeros(0, dtype=torch.int64, device=ids.device), *history_keys])
        tokens = windows[:, -1]
        # (n-gram key * C + class) -> count, longest first: below the top, the distinct (longer n-gram, class)
        # pairs that end in it (continuation counts)
        pairs, inverse, counts = torch.unique((history[-1] * vocab + tokens) * num_classes + classes,
                                              return_inverse=True, return_counts=True)
        counted = [(pairs, counts)]
        for length in reversed(range(self.order - 1)):
            shorter = torch.empty_like(pairs).scatter_(0, inverse, (history[length] * vocab + tokens) * num_classes
                                                       + classes)
            pairs, to_shorter, counts = torch.unique(shorter, return_inverse=True, return_counts=True)
            inverse = to_shorter[inverse]
            counted.insert(0, (pairs, counts))
        self.fill(counted)

    def fill(self, counted: list[tuple[Tensor, Tensor]]) -> None:
        """Counts by order (shortest history first), each (sorted n-gram key * C + class, count) -> the tables."""
        vocab, num_classes = self.vocab_size, self.num_classes
        histories = len(self.history_keys) + 1
        totals = torch.zeros(histories, num_classes, dtype=torch.float64, device=self.history_keys.device)
        shares = torch.zeros_like(totals)  # gamma(h, c): the mass discounted from what followed h
        tables = []
        for pairs, counts in counted:
            keys, rows = torch.unique(pairs // num_classes, return_inverse=True)
            count = torch.zeros(len(keys), num_classes, dtype=torch.float64, device=keys.device)
            count[rows, pairs % num_classes] = counts.double()
            discount = discounts(count)[count.clamp(1, 3).long() - 1].double() * (count > 0)
            histories_of = keys // vocab
            totals.index_add_(0, histories_of, count)
            shares.index_add_(0, histories_of, discount)
            tables.append((keys, count, discount))
        log_backoff = torch.where(totals > 0, (shares / totals).log(), 0.0)
        keys_by_order, log_probs_by_order = [], []
        for length, (keys, count, discount) in enumerate(tables):
            histories_of = keys // vocab
            if length == 0:
                lower = torch.full_like(count, 1.0 / (vocab - 2))
            else:  # the same token after the history without its oldest token: one order down
                parents = self.history_keys[histories_of - 1] // vocab
                position, found = sorted_lookup(keys_by_order[-1], parents * vocab + keys % vocab)
                assert bool(found.all()), "every n-gram's suffix is counted one order down"
                lower = log_probs_by_order[-1][position].exp()
            total, share = totals[histories_of], shares[histories_of]
            probability = torch.where(total > 0, ((count - discount).clamp(min=0) + share * lower) / total.clamp(min=1),
                                      lower)
            keys_by_order.append(keys)
            log_probs_by_order.append(probability.log())
        self.history_log_backoff = log_backoff.float()
        self.ngram_keys = torch.cat(keys_by_order)
        self.ngram_log_probs = torch.cat(log_probs_by_order).float()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """The tables take the sizes of the loaded ones (a fit sets them), after a check that they fit together."""
        tables = {name: state_dict[prefix + name] for name in TABLES if prefix + name in state_dict}
        if len(tables) == len(TABLES):
            histories, keys = len(tables["history_keys"]), len(tables["ngram_keys"])
            if (tables["history_log_backoff"].shape != (histories + 1, self.num_classes)
                    or tables["ngram_log_probs"].shape != (keys, self.num_classes)):
                raise ValueError(f"the n-gram tables do not fit together: {histories} histories, {keys} n-grams, "
                                 f"{self.num_classes} classes, but backoff weights "
                                 f"{tuple(tables['history_log_backoff'].shape)} and probabilities "
                                 f"{tuple(tables['ngram_log_probs'].shape)}")
            for name, table in tables.items():
                current = getattr(self, name)
                setattr(self, name, torch.empty(table.shape, dtype=current.dtype, device=current.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
