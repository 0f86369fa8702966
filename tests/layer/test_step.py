"""ElmanRNN.step: one time step per call, for streaming; the same states as nn.RNN over the whole sequence."""

import pytest
import torch
from torch import nn

from elman import ElmanRNN
from elman.layer import fused
from elman.threads import torch_threads


def pair(layers: int, nonlinearity: str, bias: bool, dtype: torch.dtype, batch_first: bool = False):
    torch.manual_seed(layers)
    theirs = nn.RNN(5, 7, num_layers=layers, nonlinearity="tanh" if nonlinearity == "sigmoid" else nonlinearity,
                    bias=bias, batch_first=batch_first).to(dtype)
    ours = ElmanRNN(5, 7, num_layers=layers, nonlinearity=nonlinearity, bias=bias, batch_first=batch_first).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def stepped(ours: ElmanRNN, x: torch.Tensor, hx: torch.Tensor | None, buffers: bool) -> torch.Tensor:
    """The state after stepping through x (T, B, I), one call per step."""
    spare = [torch.empty(ours.num_layers, x.shape[1], 7, dtype=x.dtype) for _ in range(2)] if buffers else [None] * 2
    h = hx
    for t in range(x.shape[0]):
        h = ours.step(x[t], h, out=spare[t % 2])
    return h


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layers,nonlinearity,bias", [(1, "tanh", True), (2, "relu", True), (3, "tanh", False)])
@pytest.mark.parametrize("buffers", [False, True])
def test_stepping_gives_nn_rnns_final_state(dtype, layers, nonlinearity, bias, buffers):
    theirs, ours = pair(layers, nonlinearity, bias, dtype)
    x = torch.randn(9, 3, 5, dtype=dtype)
    hx = torch.randn(layers, 3, 7, dtype=dtype)
    for start in (None, hx):
        with torch.no_grad():
            expected = theirs(x, start)[1]
            got = stepped(ours, x, start, buffers)
        tolerance = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)


def test_sigmoid_units_and_batch_first_step_as_forward_does():
    _, ours = pair(2, "sigmoid", True, torch.float64, batch_first=True)
    x = torch.randn(4, 6, 5, dtype=torch.float64)  # (B, T, I)
    with torch.no_grad():
        expected = ours(x)[1]
        got = stepped(ours, x.transpose(0, 1), None, buffers=False)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(fused.compiled_loops is None, reason="the compiled loops are not built")
def test_one_compiled_call_per_step_where_nothing_needs_forward(monkeypatch):
    _, ours = pair(2, "tanh", True, torch.float32)
    calls = []
    monkeypatch.setattr(ours, "forward", lambda *args, **kwargs: calls.append(args) or (None, torch.zeros(2, 1, 7)))
    x = torch.randn(1, 5)
    with torch.no_grad():
        ours.step(x)  # no autograd: the compiled call
    assert calls == []
    ours.step(x)  # the weights want gradients: forward runs, so that autograd sees the step
    assert len(calls) == 1


def test_a_step_with_gradients_or_a_bidirectional_stack_runs_forward():
    theirs, ours = pair(2, "tanh", True, torch.float64)
    x, hx = torch.randn(3, 5, dtype=torch.float64), torch.randn(2, 3, 7, dtype=torch.float64)
    h = ours.step(x, hx)  # gradients asked for: the graph is there
    h.sum().backward()
    expected = theirs(x[None], hx)[1]
    expected.sum().backward()
    torch.testing.assert_close(ours.weight_hh_l1.grad, theirs.weight_hh_l1.grad)
    both = ElmanRNN(5, 7, bidirectional=True).double()
    with torch.no_grad():
        assert both.step(x).shape == (2, 3, 7)


@pytest.mark.skipif(fused.compiled_loops is None, reason="the compiled loops are not built")
@pytest.mark.parametrize("hidden", [130, 258])  # a last block of four units not full; 258: split among threads
def test_a_row_steps_as_nn_rnn_and_to_the_bit_on_any_number_of_threads(hidden):
    torch.manual_seed(hidden)
    theirs = nn.RNN(5, hidden, num_layers=2)
    ours = ElmanRNN(5, hidden, num_layers=2)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(6, 1, 5)
    with torch.no_grad():
        expected = theirs(x)[1]
        by_threads = []
        for threads in (1, 2):
            with torch_threads(threads):
                by_threads.append(stepped(ours, x, None, buffers=False))
    torch.testing.assert_close(by_threads[0], expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(by_threads[0], by_threads[1])


def test_a_step_into_a_buffer_that_holds_its_input_reads_the_input_first():
    _, ours = pair(2, "tanh", True, torch.float32)
    hx, out = torch.randn(2, 1, 7), torch.zeros(2, 1, 7)
    out[1, :, :5] = torch.randn(1, 5)
    x = out[1, :, :5]  # the input lies in the buffer the step writes
    with torch.no_grad():
        expected = ours(x[None].clone(), hx)[1]
        assert torch.equal(ours.step(x, hx, out=out), expected)


def test_a_step_refuses_a_state_of_another_batch():
    _, ours = pair(1, "tanh", True, torch.float32)
    with torch.no_grad(), pytest.raises((ValueError, RuntimeError)):
        ours.step(torch.randn(2, 5), torch.randn(1, 3, 7))


def test_under_autocast_a_step_is_forwards_mixed_precision_step():
    torch.manual_seed(0)
    ours = ElmanRNN(5, 1024, num_layers=2)  # 4 rows of 1024 units: where bfloat16 pays
    x, hx = torch.randn(4, 5), torch.randn(2, 4, 1024)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        stepped_state = ours.step(x, hx)
        assert torch.equal(stepped_state, ours(x[None], hx)[1])
    with torch.no_grad():
        assert not torch.equal(stepped_state, ours.step(x, hx))  # bfloat16 products really were used


@pytest.mark.skipif(fused.compiled_loops is None, reason="the compiled loops are not built")
def test_under_autocast_a_narrow_step_stays_compiled_in_float32(monkeypatch):
    _, ours = pair(2, "tanh", True, torch.float32)
    x, hx = torch.randn(1, 5), torch.randn(2, 1, 7)
    with torch.no_grad():
        expected = ours.step(x, hx)
    monkeypatch.setattr(ours, "forward", lambda *args, **kwargs: pytest.fail("the step ran forward"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(ours.step(x, hx), expected)


def test_a_traced_step_records_the_recurrence():
    """torch.jit.trace sees only torch operators: a step traced without autograd must not take the compiled
    call, or the trace would hold an empty buffer in place of the recurrence."""
    _, ours = pair(2, "tanh", True, torch.float32)

    class Stepper(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = ours

        def forward(self, x, h):
            return self.rnn.step(x, h)

    x, hx = torch.randn(3, 5), torch.randn(2, 3, 7)
    with torch.no_grad():
        traced = torch.jit.trace(Stepper(), (x, hx))
        other_x, other_h = torch.randn(3, 5), torch.randn(2, 3, 7)
        torch.testing.assert_close(traced(other_x, other_h), ours(other_x[None], other_h)[1])


def test_a_step_under_vmap_is_forwards():
    _, ours = pair(1, "tanh", True, torch.float64)
    xs, hx = torch.randn(4, 3, 5, dtype=torch.float64), torch.zeros(1, 3, 7, dtype=torch.float64)
    with torch.no_grad():
        stepped_each = torch.func.vmap(lambda x: ours.step(x, hx))(xs)
        torch.testing.assert_close(stepped_each, torch.stack([ours(x[None], hx)[1] for x in xs]))
