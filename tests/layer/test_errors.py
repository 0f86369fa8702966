"""Wrong arguments get nn.RNN-like messages that say what was expected."""

import pytest
import torch

from elman import ElmanRNN


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(input_size=0, hidden_size=4), "input_size must be a positive integer"),
        (dict(input_size=3, hidden_size=-1), "hidden_size must be a positive integer"),
        (dict(input_size=3, hidden_size=4, num_layers=0), "num_layers must be a positive integer"),
        (dict(input_size=3, hidden_size=4, nonlinearity="gelu"), "Unknown nonlinearity 'gelu'"),
        (dict(input_size=3, hidden_size=4, num_layers=2, dropout=1.5), "dropout should be a number in range"),
        (dict(input_size=3, hidden_size=4, backend="magic"), "Unknown backend 'magic'"),
        (dict(input_size=3, hidden_size=4, weight_dropout=1.0), r"weight_dropout should be a number in range \[0, 1\)"),
        (dict(input_size=3, hidden_size=4, weight_dropout=-0.1), "weight_dropout should be a number"),
        (dict(input_size=3, hidden_size=4, weight_dropout=True), "weight_dropout should be a number"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ElmanRNN(**kwargs)


def test_dropout_with_one_layer_warns_like_nn_rnn():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        ElmanRNN(3, 4, dropout=0.2)


@pytest.fixture
def layer():
    return ElmanRNN(3, 4, num_layers=2)


@pytest.mark.parametrize(
    "make_input,hx,error,message",
    [
        (lambda: torch.randn(2, 3, 4, 3), None, ValueError, "Expected input to be 2D or 3D, got 4D"),
        (lambda: torch.randn(5, 2, 7), None, ValueError, r"input.size\(-1\) must be equal to input_size. Expected 3"),
        (lambda: torch.randn(5, 2, 3, dtype=torch.float64), None, TypeError, "input must have the type torch.float32"),
        (lambda: torch.ones(5, 2, 3, dtype=torch.int64), None, TypeError, "floating-point"),
        (lambda: torch.randn(0, 2, 3), None, ValueError, "at least one time step"),
        (lambda: torch.randn(5, 2, 3), torch.zeros(1, 2, 4), ValueError, r"Expected hidden size \(2, 2, 4\), got \[1,"),
        (lambda: torch.randn(5, 2, 3), torch.zeros(2, 4), ValueError, "hx should also be 3-D"),
        (lambda: torch.randn(5, 3), torch.zeros(2, 1, 4), ValueError, "hx should also be 2-D"),
        (lambda: torch.randn(5, 2, 3), torch.zeros(2, 2, 4, dtype=torch.float64), TypeError, "hx must match"),
        (lambda: [[1.0, 2.0, 3.0]], None, TypeError, "must be a Tensor or a PackedSequence"),
    ],
)
def test_forward_rejects_bad_inputs(layer, make_input, hx, error, message):
    with pytest.raises(error, match=message):
        layer(make_input(), hx)


@pytest.mark.parametrize(
    "table,ids,error,message",
    [
        (torch.randn(4, 2, 3), torch.zeros(5, 2, dtype=torch.int64), ValueError, "table must be a 2-D tensor"),
        (torch.randn(4, 3), torch.zeros(5, 2), ValueError, "ids must be a 2-D tensor of integer indices"),
        (torch.randn(4, 3), torch.zeros(5, dtype=torch.int64), ValueError, "ids must be a 2-D tensor of integer"),
        (torch.randn(4, 3), torch.full((5, 2), 4), ValueError, r"ids must lie in \[0, 4\) \(the table's rows\), got"),
        (torch.randn(4, 3), torch.full((5, 2), -1), ValueError, r"ids must lie in \[0, 4\)"),
        (torch.randn(4, 7), torch.zeros(5, 2, dtype=torch.int64), ValueError, "must be equal to input_size"),
        (torch.randn(4, 3, dtype=torch.float64), torch.zeros(5, 2, dtype=torch.int64), TypeError, "must have the type"),
        (torch.randn(4, 3), torch.zeros(0, 2, dtype=torch.int64), ValueError, "at least one time step"),
    ],
)
def test_forward_from_table_rejects_bad_inputs(layer, table, ids, error, message):
    with pytest.raises(error, match=message):
        layer.forward_from_table(table, ids)


@pytest.mark.parametrize(
    "lengths,error,message",
    [
        ([3, 6], ValueError, "lengths must lie in \\[1, 5\\]"),
        ([0, 2], ValueError, "lengths must lie in \\[1, 5\\]"),
        ([3, 2, 1], ValueError, "one entry per sequence \\(2\\)"),
        ([[3, 2]], ValueError, "must be 1-D"),
        ([2.5, 1.0], TypeError, "lengths must hold integers"),
    ],
)
def test_forward_rejects_bad_lengths(layer, lengths, error, message):
    with pytest.raises(error, match=message):
        layer(torch.randn(5, 2, 3), lengths=lengths)


def test_lengths_with_packed_sequence_is_an_error(layer):
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 3), [5, 3])
    with pytest.raises(ValueError, match="carries its own"):
        layer(packed, lengths=[5, 3])


def test_lengths_with_unbatched_input_is_an_error(layer):
    with pytest.raises(ValueError, match="batched input only"):
        layer(torch.randn(5, 3), lengths=[5])


def test_lengths_accepts_lists_and_any_integer_tensor(layer):
    x = torch.randn(5, 2, 3)
    expected, _ = layer(x, lengths=torch.tensor([5, 2]))
    torch.testing.assert_close(layer(x, lengths=[5, 2])[0], expected)
    torch.testing.assert_close(layer(x, lengths=torch.tensor([5, 2], dtype=torch.int32))[0], expected)
