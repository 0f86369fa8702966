"""ElmanRNN against torch.nn.RNN with the same weights, in float64: outputs, h_n and every gradient."""

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from elman import ElmanRNN
from elman.layer.dropout import dropout

INPUT, HIDDEN, STEPS, BATCH = 3, 4, 5, 4
LENGTHS = torch.tensor([3, 5, 1, 4])  # unsorted on purpose: the layer must sort and restore

COMBINATIONS = list(
    itertools.product(
        (1, 2, 3),  # num_layers
        (False, True),  # bidirectional
        ("tanh", "relu"),
        (False, True),  # batch_first
        (False, True),  # bias
        (False, True),  # with h0
    )
)


@pytest.fixture(params=["own loops", "nn.RNN's kernel"])
def route(request, monkeypatch):
    """Both ways the layer can compute: its own loops, and the whole stack handed to the kernel behind nn.RNN
    (what it does on CUDA, with cuDNN; forced here on every device, so that the hand-over is checked on CPU
    too)."""
    whole_stack = request.param == "nn.RNN's kernel"
    monkeypatch.setattr(ElmanRNN, "_runs_on_cudnn", lambda self, x: whole_stack)
    return request.param


def make_pair(num_layers, bidirectional, nonlinearity, batch_first, bias, seed=0, device="cpu"):
    torch.manual_seed(seed)
    kwargs = dict(
        device=device,
        num_layers=num_layers,
        nonlinearity=nonlinearity,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        dtype=torch.float64,
    )
    theirs = torch.nn.RNN(INPUT, HIDDEN, **kwargs)
    ours = ElmanRNN(INPUT, HIDDEN, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def make_inputs(num_layers, bidirectional, batch_first, with_h0, device="cpu"):
    shape = (BATCH, STEPS, INPUT) if batch_first else (STEPS, BATCH, INPUT)
    x = torch.randn(shape, dtype=torch.float64).to(device).requires_grad_(True)
    h0 = None
    if with_h0:
        h0 = torch.randn(num_layers * (2 if bidirectional else 1), BATCH, HIDDEN, dtype=torch.float64).to(device)
        h0.requires_grad_(True)
    return x, h0


def grads_of(module, x, h0, output, h_n, weights_out, weights_h):
    """Gradients of a fixed random linear function of (output, h_n) w.r.t. x, h0 and every parameter."""
    loss = (output * weights_out).sum() + (h_n * weights_h).sum()
    wrt = [x] + ([h0] if h0 is not None else []) + list(module.parameters())
    return torch.autograd.grad(loss, wrt)


def assert_close_all(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("num_layers,bidirectional,nonlinearity,batch_first,bias,with_h0", COMBINATIONS)
def test_full_length_matches_nn_rnn(num_layers, bidirectional, nonlinearity, batch_first, bias, with_h0, device,
                                    route):
    theirs, ours = make_pair(num_layers, bidirectional, nonlinearity, batch_first, bias, device=device)
    x, h0 = make_inputs(num_layers, bidirectional, batch_first, with_h0, device=device)
    out_t, h_t = theirs(x, h0)
    out_o, h_o = ours(x, h0)
    torch.testing.assert_close(out_o, out_t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h_o, h_t, rtol=1e-10, atol=1e-12)
    w_out, w_h = torch.randn_like(out_t), torch.randn_like(h_t)
    assert_close_all(grads_of(ours, x, h0, out_o, h_o, w_out, w_h), grads_of(theirs, x, h0, out_t, h_t, w_out, w_h))


@pytest.mark.parametrize("num_layers,bidirectional,nonlinearity,batch_first,bias,with_h0", COMBINATIONS)
def test_lengths_match_nn_rnn_on_packed_sequence(num_layers, bidirectional, nonlinearity, batch_first, bias, with_h0,
                                                 device, route):
    theirs, ours = make_pair(num_layers, bidirectional, nonlinearity, batch_first, bias, device=device)
    x, h0 = make_inputs(num_layers, bidirectional, batch_first, with_h0, device=device)

    packed = pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)
    packed_out, h_t = theirs(packed, h0)
    out_t, _ = pad_packed_sequence(packed_out, batch_first=batch_first, total_length=STEPS)
    out_o, h_o = ours(x, h0, lengths=LENGTHS)

    torch.testing.assert_close(out_o, out_t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h_o, h_t, rtol=1e-10, atol=1e-12)
    w_out, w_h = torch.randn_like(out_t), torch.randn_like(h_t)
    assert_close_all(grads_of(ours, x, h0, out_o, h_o, w_out, w_h), grads_of(theirs, x, h0, out_t, h_t, w_out, w_h))


@pytest.mark.parametrize("num_layers,bidirectional,nonlinearity,batch_first,bias,with_h0", COMBINATIONS)
@pytest.mark.parametrize("rows", [7, 40])  # fewer rows than inputs: the table is projected; more: rows gathered
def test_forward_from_table_matches_nn_rnn_on_the_rows(num_layers, bidirectional, nonlinearity, batch_first, bias,
                                                       with_h0, rows, device, route):
    theirs, ours = make_pair(num_layers, bidirectional, nonlinearity, batch_first, bias, device=device)
    table, h0 = make_inputs(num_layers, bidirectional, False, with_h0, device=device)
    table = torch.randn(rows, INPUT, dtype=torch.float64, device=device, requires_grad=True)
    ids = torch.randint(0, rows, (BATCH, STEPS) if batch_first else (STEPS, BATCH), device=device)

    packed = pack_padded_sequence(table[ids], LENGTHS, batch_first=batch_first, enforce_sorted=False)
    packed_out, h_t = theirs(packed, h0)
    out_t, _ = pad_packed_sequence(packed_out, batch_first=batch_first, total_length=STEPS)
    out_o, h_o = ours.forward_from_table(table, ids, h0, lengths=LENGTHS)

    torch.testing.assert_close(out_o, out_t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h_o, h_t, rtol=1e-10, atol=1e-12)
    w_out, w_h = torch.randn_like(out_t), torch.randn_like(h_t)
    assert_close_all(grads_of(ours, table, h0, out_o, h_o, w_out, w_h),
                     grads_of(theirs, table, h0, out_t, h_t, w_out, w_h))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_packed_sequence_in_packed_sequence_out(bidirectional, batch_first):
    theirs, ours = make_pair(2, bidirectional, "tanh", batch_first, True)
    x, h0 = make_inputs(2, bidirectional, batch_first, True)
    def pack():  # one pack per model: each backward frees its own graph
        return pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)

    out_t, h_t = theirs(pack(), h0)
    out_o, h_o = ours(pack(), h0)
    assert type(out_o) is type(out_t)
    torch.testing.assert_close(out_o.data, out_t.data, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out_o.batch_sizes, out_t.batch_sizes)
    torch.testing.assert_close(out_o.sorted_indices, out_t.sorted_indices)
    torch.testing.assert_close(h_o, h_t, rtol=1e-10, atol=1e-12)
    w_out, w_h = torch.randn_like(out_t.data), torch.randn_like(h_t)
    assert_close_all(
        grads_of(ours, x, h0, out_o.data, h_o, w_out, w_h), grads_of(theirs, x, h0, out_t.data, h_t, w_out, w_h)
    )


@pytest.mark.parametrize("with_h0", [False, True])
def test_unbatched_input_matches_nn_rnn(with_h0):
    theirs, ours = make_pair(2, True, "tanh", False, True)
    x = torch.randn(STEPS, INPUT, dtype=torch.float64)
    h0 = torch.randn(4, HIDDEN, dtype=torch.float64) if with_h0 else None
    out_t, h_t = theirs(x, h0)
    out_o, h_o = ours(x, h0)
    assert out_o.shape == (STEPS, 2 * HIDDEN) and h_o.shape == (4, HIDDEN)
    torch.testing.assert_close(out_o, out_t)
    torch.testing.assert_close(h_o, h_t)


def test_state_dict_loads_both_ways():
    torch.manual_seed(1)
    ours = ElmanRNN(3, 5, num_layers=2, bidirectional=True)
    theirs = torch.nn.RNN(3, 5, num_layers=2, bidirectional=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(theirs(x)[0], ours(x)[0])


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(2)
    layer = ElmanRNN(3, 8, num_layers=2, dropout=0.5)
    x = torch.randn(6, 4, 3)
    torch.manual_seed(3)
    train_a = layer(x)[0]
    torch.manual_seed(4)
    train_b = layer(x)[0]
    assert not torch.allclose(train_a, train_b)
    layer.eval()
    torch.testing.assert_close(layer(x)[0], layer(x)[0])


@pytest.mark.parametrize("from_table", [False, True])
def test_weight_dropout_is_nn_rnn_on_masked_recurrent_weights(from_table, device, route):
    """In training, ``weight_dropout`` multiplies each W_hh by one mask per forward call (drawn layer by layer,
    direction by direction, as ``elman.layer.dropout.dropout`` draws it), and the gradients reach the
    parameters through the mask; in evaluation mode it does nothing."""
    theirs, _ = make_pair(2, True, "tanh", False, True, device=device)
    ours = ElmanRNN(INPUT, HIDDEN, num_layers=2, bidirectional=True, weight_dropout=0.4, dtype=torch.float64,
                    device=device)
    ours.load_state_dict(theirs.state_dict())
    x, h0 = make_inputs(2, True, False, True, device=device)
    ids = torch.randint(0, BATCH, (STEPS, BATCH), device=device)

    def run_ours():
        return ours.forward_from_table(x[0], ids, h0) if from_table else ours(x, h0)

    names = [f"weight_hh_l{layer}{suffix}" for layer in range(2) for suffix in ("", "_reverse")]
    torch.manual_seed(5)
    masks = {name: dropout(torch.ones_like(getattr(theirs, name)), 0.4) for name in names}
    assert all(bool((mask == 0).any()) and bool((mask != 0).any()) for mask in masks.values())
    masked = {name: weight * masks[name] if name in masks else weight for name, weight in theirs.named_parameters()}
    out_t, h_t = torch.func.functional_call(theirs, masked, (x[0][ids] if from_table else x, h0))
    torch.manual_seed(5)
    out_o, h_o = run_ours()
    torch.testing.assert_close(out_o, out_t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h_o, h_t, rtol=1e-10, atol=1e-12)
    w_out, w_h = torch.randn_like(out_t), torch.randn_like(h_t)
    assert_close_all(grads_of(ours, x, h0, out_o, h_o, w_out, w_h), grads_of(theirs, x, h0, out_t, h_t, w_out, w_h))

    torch.manual_seed(6)
    assert not torch.allclose(run_ours()[0], out_o)  # another call, another mask
    ours.eval()
    out_t, h_t = theirs(x[0][ids] if from_table else x, h0)
    torch.testing.assert_close(run_ours()[0], out_t, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch_first,with_h0,with_lengths", list(itertools.product((False, True), repeat=3)))
def test_an_empty_batch_gives_empty_outputs_as_nn_rnn(route, batch_first, with_h0, with_lengths):
    theirs, ours = make_pair(2, True, "tanh", batch_first, True)
    x = torch.randn((0, STEPS, INPUT) if batch_first else (STEPS, 0, INPUT), dtype=torch.float64)
    h0 = torch.randn(4, 0, HIDDEN, dtype=torch.float64) if with_h0 else None
    out, h_n = ours(x, h0, lengths=torch.zeros(0, dtype=torch.int64) if with_lengths else None)
    expected_out, expected_h_n = theirs(x, h0)
    assert out.shape == expected_out.shape and h_n.shape == expected_h_n.shape
    (out.sum() + h_n.sum()).backward()  # the outputs are part of the graph, as nn.RNN's
    assert all(p.grad is not None and not p.grad.any() for p in ours.parameters())


@pytest.mark.parametrize("num_layers,bidirectional,nonlinearity,batch_first,bias,with_h0", COMBINATIONS)
def test_gradgradcheck(num_layers, bidirectional, nonlinearity, batch_first, bias, with_h0):
    """Second order through the fused operator (its backward, run with create_graph, is differentiable)."""
    _, ours = make_pair(num_layers, bidirectional, nonlinearity, batch_first, bias)
    x, h0 = make_inputs(num_layers, bidirectional, batch_first, with_h0)
    names = [name for name, _ in ours.named_parameters()]
    lengths = LENGTHS if with_h0 else None  # both kinds of batch, without doubling the count

    def run(x, *params):
        return torch.func.functional_call(ours, dict(zip(names, params, strict=True)), (x, h0),
                                          {"lengths": lengths})

    params = [p.detach().requires_grad_() for p in ours.parameters()]
    assert torch.autograd.gradgradcheck(run, (x, *params), fast_mode=True)
