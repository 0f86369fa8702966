"""Character language model: characters -> embedding -> ElmanRNN -> linear -> next-character logits.

Optionally conditioned: a label, such as a nationality, is embedded as the initial hidden state of every
layer (the book's chapter-7 "model 2") and, so that its influence does not fade over a long name, also
added to the input at every step; generation can then be steered by it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm import tqdm

from elman.data.batches import line_batches
from elman.layer import ACTIVATIONS, ElmanRNN
from elman.layer.dropout import Dropout
from elman.options import option, positive_int


@dataclass
class LanguageModelConfig:
    vocab_size: int
    embedding_dim: int = option(64, "size of the character embeddings", type=positive_int)
    hidden_size: int = option(512, "units per layer", type=positive_int)
    num_layers: int = option(2, "stacked Elman layers", type=positive_int)
    nonlinearity: str = option("tanh", "the recurrence's units", choices=ACTIVATIONS)
    # between recurrent layers and before the output layer
    dropout: float = option(0.0, "dropout between the layers (a classifier's: and in its head)", type=float)
    embedding_dropout: float = option(0.0, "dropout on the character embeddings", type=float)
    weight_dropout: float = option(0.0, "DropConnect on the recurrent weights W_hh in training", type=float)
    num_conditions: int = 0  # labels a conditioned model can be steered by; 0: unconditioned


class LanguageModel(nn.Module):
    """ids (B, T) int64 (0 = padding) -> logits (B, T, V) over the next character, and the final state.

    ``forward(ids, state=None, lengths=None, conditions=None)``:
        ids: ``(B, T)``; the model reads ``ids[:, t]`` and predicts ``ids[:, t + 1]``.
        state: ``(L, B, H)`` hidden states to continue from (stateful truncated BPTT and generation);
            None starts from zeros, or from the condition's embedding in a conditioned model.
        lengths: ``(B,)`` valid steps of padded rows; ``state`` out is then each row's state at its end.
        conditions: ``(B,)`` label indices; required by a conditioned model, refused by another.
    Returns ``(logits (B, T, V), state (L, B, H))``. Per layer, :math:`h_t = \\tanh(x_t W_{ih}^T + b_{ih}
    + h_{t-1} W_{hh}^T + b_{hh})` (or the configured nonlinearity), :math:`x_t` the character embedding for
    the first layer (plus the condition's input embedding) and the layer below's :math:`h_t` above it;
    logits :math:`= h^{(L)}_t W_{out}^T + b`. In training, dropout acts on the character embeddings
    (``embedding_dropout``), between the layers and before the output layer (``dropout``).
    """

    def __init__(self, config: LanguageModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=0)
        self.rnn = ElmanRNN(config.embedding_dim, config.hidden_size, num_layers=config.num_layers,
                            nonlinearity=config.nonlinearity,
                            dropout=config.dropout if config.num_layers > 1 else 0.0,  # between layers
                            weight_dropout=config.weight_dropout)
        # an orthogonal W_hh (every singular value 1) carries the state on undamped from the first step
        # (docs/measurements.md, "Orthogonal recurrent weights")
        for layer in range(config.num_layers):
            _, w_hh, _, _ = self.rnn.direction_parameters(layer, 0)
            nn.init.orthogonal_(w_hh)
        self.dropout = Dropout(config.dropout)
        self.embedding_dropout = Dropout(config.embedding_dropout)
        self.output = nn.Linear(config.hidden_size, config.vocab_size)
        self.conditions = (nn.Embedding(config.num_conditions, config.num_layers * config.hidden_size)
                           if config.num_conditions else None)
        self.condition_inputs = (nn.Embedding(config.num_conditions, config.embedding_dim)
                                 if config.num_conditions else None)

    def check_conditions(self, batch_size: int, conditions: Tensor | None) -> None:
        if self.conditions is None:
            if conditions is not None:
                raise ValueError("this language model is not conditioned; do not pass conditions")
            return
        if conditions is None:
            raise ValueError("this language model is conditioned; pass one condition per row")
        if conditions.shape != (batch_size,):
            raise ValueError(f"conditions must have shape ({batch_size},), got {tuple(conditions.shape)}")

    def initial_state(self, batch_size: int, conditions: Tensor | None = None) -> Tensor | None:
        """(L, B, H) start states: the conditions' embeddings for a conditioned model, else None (zeros)."""
        self.check_conditions(batch_size, conditions)
        if self.conditions is None:
            return None
        layers, hidden = self.config.num_layers, self.config.hidden_size
        return self.conditions(conditions).view(batch_size, layers, hidden).transpose(0, 1).contiguous()

    def hidden_states(self, ids: Tensor, state: Tensor | None = None, lengths: Tensor | None = None,
                      conditions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """-> (the top layer's state after each step (T, B, H), final states (L, B, H))."""
        self.check_conditions(ids.shape[0], conditions)
        if state is None:
            state = self.initial_state(ids.shape[0], conditions)
        # one character at a time (generation): the recurrence's one-call step, forward's arithmetic
        one_step = ids.shape[1] == 1 and lengths is None and not self.training and not torch.is_grad_enabled()
        dropped = self.training and self.embedding_dropout.p > 0
        if self.condition_inputs is None and not dropped and not one_step:  # inputs: rows of the embedding table
            return self.rnn.forward_from_table(self.embedding.weight, ids.t(), state, lengths=lengths)
        inputs = self.embedding_dropout(self.embedding(ids.t()))
        if self.condition_inputs is not None:
            inputs = inputs + self.condition_inputs(conditions)
        if one_step:
            state = self.rnn.step(inputs[0], state)
            return state[-1:], state
        return self.rnn(inputs, state, lengths=lengths)

    def forward(self, ids: Tensor, state: Tensor | None = None, lengths: Tensor | None = None,
                conditions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        states, state = self.hidden_states(ids, state, lengths, conditions)
        logits = self.output(self.dropout(states))  # (T, B, V)
        return logits.transpose(0, 1), state


def token_log_likelihoods(model: LanguageModel, ids: Tensor, lengths: Tensor, conditions: Tensor | None) -> Tensor:
    """Lines encoded ``<bos> chars <eos>`` (ids (B, T), 0 as padding; lengths (B,)) -> (B, T - 1): log p of
    each token after <bos> given the tokens before it (and the row's condition, ``conditions`` (B,)); 0 at
    padding."""
    logits, _ = model(ids[:, :-1], lengths=lengths - 1, conditions=conditions)
    targets = ids[:, 1:]
    # gathered rather than cross_entropy(reduction="none"), which torch.onnx.export fails to decompose
    log_likelihoods = logits.float().log_softmax(2).gather(2, targets.unsqueeze(2)).squeeze(2)
    return log_likelihoods.masked_fill(targets == 0, 0.0)


def log_frequencies(counts: Tensor) -> Tensor:
    """Counts (C,) of the conditions (or classes) in training -> log p(c) (C,), the prior of Bayes' rule; one
    never seen counts as seen once."""
    counts = counts.double().clamp(min=1)
    return (counts / counts.sum()).log().float()


def condition_log_likelihoods(model: LanguageModel, ids: Tensor, lengths: Tensor) -> Tensor:
    """Lines as for ``token_log_likelihoods`` -> (B, C): log p(line | c) of a conditioned model for each of its
    C conditions, the likelihoods of Bayes' rule. Each line is read once per condition, all in one batch of
    B * C rows."""
    rows, conditions = ids.shape[0], model.config.num_conditions
    every_condition = torch.arange(conditions, device=ids.device).repeat(rows)
    log_likelihoods = token_log_likelihoods(model, ids.repeat_interleave(conditions, dim=0),
                                            lengths.repeat_interleave(conditions), every_condition)
    return log_likelihoods.sum(1).view(rows, conditions)


@torch.no_grad()
def scored_stream_logits(model: LanguageModel, ids: Tensor, segments: int = 1, burn_in: int = 0,
                         chunk_length: int = 4096) -> Iterator[tuple[Tensor, Tensor]]:
    """Per chunk of a text ``ids`` (N,) read statefully: the logits (n, V) and targets (n,) of its next-character
    predictions, with target 0 where a prediction is not scored (burn-in and padding).

    ``segments=1`` is exact: one pass over the whole text, the state carried from chunk to chunk, equal to
    one long forward pass. With more, the text is cut into that many segments read in parallel (much
    faster), each starting from the state after reading the ``burn_in`` characters before it unscored: an
    estimate, used for validation during training.
    """
    model.eval()
    device = model.output.weight.device  # the text may stay on the CPU; each chunk goes where the model is
    predictions = ids.shape[0] - 1
    if predictions < 1:
        raise ValueError("a text of fewer than two characters has nothing to predict")
    segments = max(1, min(segments, predictions))
    edges = [predictions * s // segments for s in range(segments + 1)]
    rows = []
    for s in range(segments):
        begin = max(0, edges[s] - burn_in)
        targets = ids[begin + 1 : edges[s + 1] + 1].clone()
        targets[: edges[s] - begin] = 0  # burn-in: read, not scored
        rows.append((ids[begin : edges[s + 1]], targets))
    rows.sort(key=lambda row: -row[0].shape[0])  # longest first: the rows still running are a prefix
    lengths = torch.tensor([row[0].shape[0] for row in rows])
    inputs = nn.utils.rnn.pad_sequence([row[0] for row in rows], batch_first=True)
    targets = nn.utils.rnn.pad_sequence([row[1] for row in rows], batch_first=True)
    state = None
    for start in range(0, int(lengths[0]), chunk_length):
        running = int((lengths > start).sum())
        steps = (lengths[:running] - start).clamp(max=chunk_length)
        width = int(steps[0])
        logits, state = model(inputs[:running, start : start + width].to(device),
                              None if state is None else state[:, :running],
                              lengths=None if bool((steps == width).all()) else steps)
        yield logits.reshape(-1, logits.shape[-1]), targets[:running, start : start + width].reshape(-1).to(device)


def stream_loss(model: LanguageModel, ids: Tensor, segments: int = 1, burn_in: int = 0,
                chunk_length: int = 4096, progress: bool = False) -> float:
    """Mean next-character cross-entropy (nats) over a text ``ids`` (N,), read statefully: exactly with
    ``segments=1``, else estimated (see ``scored_stream_logits``). ``progress``: a bar over the characters
    (one exact pass reads some 30,000 a second on two cores)."""
    total = 0.0
    with tqdm(total=ids.shape[0] - 1, unit="char", unit_scale=True, desc="evaluate", disable=not progress,
              leave=False) as bar:
        for logits, targets in scored_stream_logits(model, ids, segments, burn_in, chunk_length):
            total += float(nn.functional.cross_entropy(logits, targets, ignore_index=0, reduction="sum"))
            bar.update(min(targets.numel(), bar.total - bar.n))
    return total / (ids.shape[0] - 1)


@torch.no_grad()
def scored_line_logits(model: LanguageModel, ids: Tensor, lengths: Tensor, conditions: Tensor | None,
                       batch_size: int = 512) -> Iterator[tuple[Tensor, Tensor]]:
    """Per batch of lines encoded ``<bos> chars <eos>`` (rows of ``ids`` (N, T), ``lengths`` (N,)): the logits
    (n, V) and targets (n,) of every predicted token, each character and each line's end, padding left out."""
    model.eval()
    for batch in line_batches(ids, lengths, conditions, batch_size):
        batch = batch.to(model.output.weight.device)  # the lines may stay on the CPU
        logits, _ = model(batch.inputs, lengths=batch.lengths, conditions=batch.conditions)
        scored = batch.targets != 0
        yield logits[scored], batch.targets[scored]


def line_loss(model: LanguageModel, ids: Tensor, lengths: Tensor, conditions: Tensor | None,
              batch_size: int = 512) -> float:
    """Mean next-token cross-entropy (nats) over lines encoded ``<bos> chars <eos>`` (rows of ``ids``
    (N, T), ``lengths`` (N,)); every character and each line's end are predicted."""
    total, count = 0.0, 0
    for logits, targets in scored_line_logits(model, ids, lengths, conditions, batch_size):
        total += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
        count += targets.shape[0]
    return total / count
