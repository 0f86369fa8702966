"""The fused fast path against the reference loop, gradcheck, the compiled loop, and stateful use."""

import threading

import pytest
import torch

from elman import ElmanRNN
from elman.layer import fused, ops
from elman.layer.reference import reference_direction
from elman.layer.rnn import bfloat16_pays

LENGTHS = torch.tensor([6, 2, 5, 1, 6])


def pair(backend_kwargs=None, **kwargs):
    torch.manual_seed(0)
    fast = ElmanRNN(3, 4, dtype=torch.float64, **kwargs)
    reference = ElmanRNN(3, 4, dtype=torch.float64, backend="reference", **kwargs)
    reference.load_state_dict(fast.state_dict())
    return fast, reference


def outputs_and_grads(layer, x, h0, lengths):
    out, h_n = layer(x, h0, lengths=lengths)
    torch.manual_seed(9)
    loss = (out * torch.randn_like(out)).sum() + (h_n * torch.randn_like(h_n)).sum()
    grads = torch.autograd.grad(loss, [x, h0, *layer.parameters()])
    return (out, h_n, *grads)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_fused_agrees_with_reference(nonlinearity, bidirectional, lengths):
    fast, reference = pair(num_layers=2, nonlinearity=nonlinearity, bidirectional=bidirectional)
    x = torch.randn(6, 5, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.rand(4 if bidirectional else 2, 5, 4, dtype=torch.float64, requires_grad=True)
    for a, b in zip(
        outputs_and_grads(fast, x, h0, lengths), outputs_and_grads(reference, x, h0, lengths), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_fused_agrees_with_reference_on_rows_of_a_table(nonlinearity, bidirectional, lengths):
    fast, reference = pair(num_layers=2, nonlinearity=nonlinearity, bidirectional=bidirectional)
    table = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)  # 4 rows for 30 inputs: projected
    ids = torch.randint(0, 4, (6, 5))
    h0 = torch.rand(4 if bidirectional else 2, 5, 4, dtype=torch.float64, requires_grad=True)

    def outputs_and_table_grads(layer):
        out, h_n = layer.forward_from_table(table, ids, h0, lengths=lengths)
        torch.manual_seed(9)
        loss = (out * torch.randn_like(out)).sum() + (h_n * torch.randn_like(h_n)).sum()
        return (out, h_n, *torch.autograd.grad(loss, [table, h0, *layer.parameters()]))

    for a, b in zip(outputs_and_table_grads(fast), outputs_and_table_grads(reference), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_sigmoid_reference_is_the_written_recurrence():
    """Elman's sigmoid units, checked by hand against h_t = sigmoid(x_t W_ih^T + b_ih + h W_hh^T + b_hh)."""
    _, reference = pair(nonlinearity="sigmoid")
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    h = torch.full((2, 4), 0.5, dtype=torch.float64)
    out, h_n = reference(x, h.unsqueeze(0))
    for t in range(4):
        h = torch.sigmoid(
            x[t] @ reference.weight_ih_l0.T + reference.bias_ih_l0 + h @ reference.weight_hh_l0.T + reference.bias_hh_l0
        )
        torch.testing.assert_close(out[t], h)
    torch.testing.assert_close(h_n[0], h)


@pytest.mark.parametrize("nonlinearity", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("outputs", ["both", "states", "final"])
@pytest.mark.parametrize("entry", [ops.rnn_direction, torch.ops.elman.rnn_direction.default],
                         ids=["eager entry", "registered operator"])
def test_gradcheck_single_direction(nonlinearity, padded, outputs, entry):
    """Both outputs, or one of them alone (the other then hands back no gradient at all); through the layer's
    eager entry (the kernels in an autograd.Function) and through the operator's registered autograd."""
    torch.manual_seed(0)
    steps, batch, inputs, hidden = 4, 3, 2, 3
    x = torch.randn(steps, batch, inputs, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(batch, hidden, dtype=torch.float64, requires_grad=True)
    params = [torch.randn(*shape, dtype=torch.float64, requires_grad=True)
              for shape in ((hidden, inputs), (hidden, hidden), (hidden,), (hidden,))]
    lengths = torch.tensor([3, 4, 1]) if padded else None  # unsorted: the operator sorts them

    def run(x, h0, w_ih, w_hh, b_ih, b_hh):
        out, h_n = entry(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, None, nonlinearity, False, False)
        return {"both": (out, h_n), "states": out, "final": h_n}[outputs]

    assert torch.autograd.gradcheck(run, (x, h0, *params))


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("table_rows", [5, 20])  # fewer rows than inputs: projected once; more: gathered first
def test_gradcheck_table_rows(padded, reverse, table_rows):
    """The input is rows of a table; its gradient sums over the steps reading each row (rows read twice,
    and rows never read, included)."""
    torch.manual_seed(0)
    table = torch.randn(table_rows, 2, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([[0, 1, 1], [2, 0, 3], [2, 2, 0], [1, 3, 0]])  # row 4 is never read
    params = [torch.randn(*shape, dtype=torch.float64, requires_grad=True) for shape in ((3, 2), (3, 3), (3,), (3,))]
    h0 = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 1, 3]) if padded else None

    def run(table, h0, w_ih, w_hh, b_ih, b_hh):
        return ops.rnn_direction(table, h0, w_ih, w_hh, b_ih, b_hh, lengths, rows, "tanh", reverse, False)

    assert torch.autograd.gradcheck(run, (table, h0, *params))
    out, h_n = run(table, h0, *params)
    expected_out, expected_h_n = reference_direction(table, h0, *params, "tanh", reverse, lengths, rows)
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(h_n, expected_h_n)


def test_gradcheck_whole_layer_with_lengths():
    torch.manual_seed(0)
    layer = ElmanRNN(2, 3, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 4, 3])

    def run(x, h0, *params):
        named = dict(zip([name for name, _ in layer.named_parameters()], params, strict=True))
        return torch.func.functional_call(layer, named, (x, h0), {"lengths": lengths})

    assert torch.autograd.gradcheck(run, (x, h0, *[p.detach().requires_grad_() for p in layer.parameters()]))


@pytest.mark.skipif(fused.compiled_loops is None, reason="compiled loop not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, "mixed"])  # mixed: float32 with bfloat16 GEMMs
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_compiled_loops_equal_python_loops(dtype, activation):
    torch.manual_seed(0)
    mixed = dtype == "mixed"
    dtype = torch.float32 if mixed else dtype
    batch_sizes = [5, 5, 4, 2, 1]
    pre = torch.randn(5, 5, 6, dtype=dtype)
    h0 = torch.randn(5, 6, dtype=dtype)
    w_hh = torch.randn(6, 6, dtype=dtype) * 0.5
    if mixed:
        w_hh = w_hh.to(torch.bfloat16)
    forward, backward = ((fused.compiled_loops.forward_loop_bf16, fused.compiled_loops.backward_loop_bf16) if mixed
                         else (fused.compiled_loops.forward_loop, fused.compiled_loops.backward_loop))
    out_py, out_c = pre.clone(), pre.clone()
    fused.forward_loop(out_py, h0, w_hh, batch_sizes, activation)
    forward(out_c, h0, w_hh, batch_sizes, fused.ACTIVATIONS.index(activation))
    torch.testing.assert_close(out_c, out_py)

    slope = fused.activation_slope(out_py, activation)  # the compiled loop computes it from the states
    dz_py = torch.randn_like(pre)
    dz_c = dz_py.clone()
    fused.backward_loop(dz_py, slope, w_hh, batch_sizes)
    backward(dz_c, out_py, w_hh, batch_sizes, fused.ACTIVATIONS.index(activation))
    torch.testing.assert_close(dz_c, dz_py)


@pytest.mark.skipif(fused.compiled_loops is None, reason="compiled loop not built")
@pytest.mark.parametrize("hidden", [33, 77, 128])  # one panel and a column; partial last panel; whole panels
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_compiled_loops_over_many_rows_match_the_python_loops(hidden, activation):
    # steps enough for the AVX-512 panels where the CPU has them (8 steps of 2 rows or more); 13, 11 and 9 rows are
    # not whole tiles of 8, one row takes the one-row product, and the last two steps have no rows left
    batch_sizes = [13] * 5 + [11, 9, 8, 1, 0, 0]
    torch.manual_seed(hidden)
    pre = torch.randn(len(batch_sizes), 13, hidden, dtype=torch.float64)
    h0 = torch.randn(13, hidden, dtype=torch.float64)
    w_hh = torch.randn(hidden, hidden, dtype=torch.float64) / hidden**0.5
    code = fused.ACTIVATIONS.index(activation)
    out64, out32 = pre.clone(), pre.float()
    fused.forward_loop(out64, h0, w_hh, batch_sizes, activation)
    fused.compiled_loops.forward_loop(out32, h0.float(), w_hh.float(), batch_sizes, code)
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-5)
    for t, rows in enumerate(batch_sizes):  # the rows of ended sequences are left alone
        assert torch.equal(out32[t, rows:], pre[t, rows:].float())

    dz64 = torch.randn_like(pre)
    dz32 = dz64.float()
    fused.backward_loop(dz64, fused.activation_slope(out64, activation), w_hh, batch_sizes)
    fused.compiled_loops.backward_loop(dz32, out64.float(), w_hh.float(), batch_sizes, code)
    torch.testing.assert_close(dz32.double(), dz64, rtol=1e-5, atol=1e-5)

    # mixed precision: the same bfloat16 products as the Python loop's, up to the order of each sum (which can
    # move a product's rounding to bfloat16 by one step, 2^-8 of it)
    w_bf16 = w_hh.to(torch.bfloat16)
    out_py, out_c = pre.float(), pre.float()
    fused.forward_loop(out_py, h0.float(), w_bf16, batch_sizes, activation)
    fused.compiled_loops.forward_loop_bf16(out_c, h0.float(), w_bf16, batch_sizes, code)
    torch.testing.assert_close(out_c, out_py, rtol=2e-2, atol=2e-2)
    dz_py, dz_c = dz64.float(), dz64.float()
    fused.backward_loop(dz_py, fused.activation_slope(out_py, activation), w_bf16, batch_sizes)
    fused.compiled_loops.backward_loop_bf16(dz_c, out_py, w_bf16, batch_sizes, code)
    torch.testing.assert_close(dz_c, dz_py, rtol=2e-2, atol=2e-2)


@pytest.mark.skipif(fused.compiled_loops is None or not fused.compiled_loops.has_panels(),
                    reason="the float32 loops multiply by BLAS here (no compiled loops, or no AVX-512)")
def test_panel_loops_give_the_same_bits_on_one_thread_and_on_two():
    torch.manual_seed(0)
    batch_sizes = [16] * 6 + [5, 3]
    pre, h0 = torch.randn(8, 16, 300), torch.randn(16, 300)
    w_hh = torch.randn(300, 300) / 300**0.5
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):  # 8 steps; 10 panels of 16 x 300 x 32 multiply-adds: split at two threads
            torch.set_num_threads(threads)
            out, dz = pre.clone(), pre.clone()
            fused.compiled_loops.forward_loop(out, h0, w_hh, batch_sizes, 0)
            fused.compiled_loops.backward_loop(dz, out, w_hh, batch_sizes, 0)
            results.append((out, dz))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_inference_mode_then_training_in_a_fresh_thread():
    # the compiled loops keep scratch memory per thread; made first under inference_mode, it must still serve a
    # training step after it (a new thread, so that the scratch is made here)
    torch.manual_seed(0)
    # float32 panels; under autocast at 32 x 512, where bfloat16 pays, the bfloat16 panels
    cases = [(ElmanRNN(5, 64), torch.randn(12, 16, 5), False), (ElmanRNN(5, 512), torch.randn(12, 32, 5), True)]
    failures = []

    def run():
        try:
            for layer, x, autocast in cases:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), torch.inference_mode():
                    layer(x)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    layer(x)[0].sum().backward()
        except RuntimeError as error:
            failures.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert not failures, failures
    for layer, _, _ in cases:
        assert layer.weight_hh_l0.grad is not None and bool(layer.weight_hh_l0.grad.abs().sum() > 0)


@pytest.mark.skipif(fused.compiled_output_buffer is None, reason="compiled loops not built")
def test_a_dropped_output_serves_the_next_call_and_a_kept_one_is_never_written():
    torch.manual_seed(0)
    layer = ElmanRNN(5, 48).eval()
    x = torch.randn(9, 4, 5)
    with torch.inference_mode():
        kept, _ = layer(x)
        expected = kept.clone()
        second, _ = layer(2 * x)
        assert second.data_ptr() != kept.data_ptr()
        address = second.data_ptr()
        del second
        third, _ = layer(x)
        assert third.data_ptr() == address  # the dropped output's memory, already mapped
    assert torch.equal(third, expected) and torch.equal(kept, expected)


@pytest.mark.skipif(fused.compiled_loops is None, reason="compiled loop not built")
@pytest.mark.parametrize("batch_sizes", [[5, 6], [5, -1], [5]])
def test_compiled_loops_refuse_row_counts_outside_the_batch(batch_sizes):
    out, h0, w_hh = torch.zeros(2, 5, 3), torch.zeros(5, 3), torch.zeros(3, 3)
    with pytest.raises(RuntimeError, match="batch_sizes"):
        fused.compiled_loops.forward_loop(out, h0, w_hh, batch_sizes, 0)
    with pytest.raises(RuntimeError, match="batch_sizes"):
        fused.compiled_loops.backward_loop(out, out.clone(), w_hh, batch_sizes, 0)


def test_python_loop_used_without_compiled_module(monkeypatch):
    fast, reference = pair(num_layers=2, bidirectional=True)
    monkeypatch.setattr(fused, "compiled_loops", None)
    x = torch.randn(6, 5, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.rand(4, 5, 4, dtype=torch.float64, requires_grad=True)
    for a, b in zip(
        outputs_and_grads(fast, x, h0, LENGTHS), outputs_and_grads(reference, x, h0, LENGTHS), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_compiled_loop_is_built_when_required():
    """`make test` sets ELMAN_REQUIRE_COMPILED=1: there, a missing build is a failure, not a skip."""
    import os

    if os.environ.get("ELMAN_REQUIRE_COMPILED") != "1":
        pytest.skip("ELMAN_REQUIRE_COMPILED is not set")
    assert fused.compiled_loops is not None
    # the step and generation tests skip without these: a build older than the source must fail here
    assert fused.compiled_step is not None and fused.compiled_generate is not None


def test_a_compiled_module_older_than_the_code_is_set_aside_with_a_warning(monkeypatch):
    import sys
    import types

    import elman.layer

    stale = types.ModuleType("elman.layer._loops")
    stale.__file__ = "/somewhere/_loops.so"
    for name in fused.COMPILED_FUNCTIONS[:-1]:  # built before the last function was added
        setattr(stale, name, getattr(fused.compiled_loops, name, None))
    monkeypatch.setitem(sys.modules, "elman.layer._loops", stale)
    monkeypatch.setattr(elman.layer, "_loops", stale, raising=False)
    with pytest.warns(RuntimeWarning, match=r"_loops.so was built from an older _loops.cpp \(it has no dropout_apply"):
        assert fused._compiled_module() is None
    setattr(stale, fused.COMPILED_FUNCTIONS[-1], None)
    assert fused._compiled_module() is stale


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("bidirectional", [False])
def test_truncated_bptt_chunks_equal_one_long_run(backend, bidirectional):
    torch.manual_seed(0)
    layer = ElmanRNN(3, 5, num_layers=2, backend=backend, bidirectional=bidirectional)
    x = torch.randn(24, 4, 3)
    whole, h_whole = layer(x)
    state, pieces = None, []
    for chunk in x.split(7):
        out, state = layer(chunk, state)
        state = state.detach()
        pieces.append(out)
    torch.testing.assert_close(torch.cat(pieces), whole)
    torch.testing.assert_close(state, h_whole)


def test_truncated_bptt_gradients_stop_at_chunk_boundary():
    torch.manual_seed(0)
    layer = ElmanRNN(2, 3)
    first = torch.randn(5, 1, 2, requires_grad=True)
    _, state = layer(first)
    out, _ = layer(torch.randn(5, 1, 2), state.detach())
    out.sum().backward()
    assert first.grad is None
    assert layer.weight_hh_l0.grad is not None and layer.weight_hh_l0.grad.abs().sum() > 0


def test_outputs_past_length_are_zero_and_inputs_there_get_no_gradient():
    torch.manual_seed(0)
    layer = ElmanRNN(3, 4, bidirectional=True)
    x = torch.randn(6, 5, 3, requires_grad=True)
    out, _ = layer(x, lengths=LENGTHS)
    mask = torch.arange(6).unsqueeze(1) >= LENGTHS.unsqueeze(0)
    assert out[mask].abs().sum() == 0
    out.sum().backward()
    assert x.grad[mask].abs().sum() == 0
    assert x.grad[~mask].abs().sum() > 0


def test_float32_fast_path_matches_nn_rnn():
    torch.manual_seed(0)
    theirs = torch.nn.RNN(16, 32, num_layers=2)
    ours = ElmanRNN(16, 32, num_layers=2)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(40, 64, 16)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3])  # one row: its own product; 512 units: the units split among threads
def test_a_wide_layer_matches_nn_rnn_forward_and_backward(batch):
    torch.manual_seed(batch)
    theirs = torch.nn.RNN(5, 512, num_layers=2)
    ours = ElmanRNN(5, 512, num_layers=2)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, batch, 5)
    outputs = [rnn(x)[0] for rnn in (ours, theirs)]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)
    for output in outputs:
        (output * torch.linspace(-1, 1, 512)).sum().backward()
    for name in ("weight_hh_l0", "weight_ih_l1", "bias_hh_l0"):
        torch.testing.assert_close(ours.get_parameter(name).grad, theirs.get_parameter(name).grad, rtol=1e-4,
                                   atol=1e-5)


def test_half_precision_runs_the_python_loop_and_matches_float32():
    torch.manual_seed(0)
    layer = ElmanRNN(4, 8)
    x = torch.randn(5, 3, 4)
    expected, _ = layer(x, lengths=[5, 2, 4])
    out, _ = layer.to(torch.bfloat16)(x.to(torch.bfloat16), lengths=[5, 2, 4])
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)


def test_single_thread_setting_is_restored_after_small_problems():
    threads = torch.get_num_threads()
    ElmanRNN(2, 3)(torch.randn(3, 1, 2))
    assert torch.get_num_threads() == threads


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("nonlinearity", ["tanh", "sigmoid"])  # cuDNN there; the Python loop there
def test_cuda_fast_path_matches_cpu(nonlinearity, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # as for nn.RNN, float32 may run as TF32
    torch.manual_seed(0)
    cpu = ElmanRNN(8, 16, num_layers=2, bidirectional=True, nonlinearity=nonlinearity)
    gpu = ElmanRNN(8, 16, num_layers=2, bidirectional=True, nonlinearity=nonlinearity, device="cuda")
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(10, 4, 8)
    lengths = torch.tensor([10, 3, 7, 1])
    out_cpu, h_cpu = cpu(x, lengths=lengths)
    out_gpu, h_gpu = gpu(x.cuda(), lengths=lengths)
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h_gpu.cpu(), h_cpu, rtol=1e-4, atol=1e-5)


def ulps(x: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """How many float32 units in the last place x (float32) lies from exact (float64, finite)."""
    nearest = exact.float().abs()
    unit = (torch.nextafter(nearest, torch.tensor(float("inf"))) - nearest).double()
    return (x.double() - exact).abs() / unit


@pytest.mark.skipif(fused.compiled_loops is None, reason="compiled loop not built")
@pytest.mark.parametrize("loop", ["forward_loop", "forward_loop_bf16"])
def test_the_compiled_float32_tanh_is_within_one_and_a_half_ulp(loop):
    # With W_hh = 0 the forward loop returns act(x) itself: the compiled loops' own tanh, checked in float64
    # over the whole float32 range that matters, tiny values and the switch at |x| = 0.625 included.
    x = torch.cat([torch.linspace(-12, 12, 200_001), torch.linspace(-0.7, 0.7, 100_001),
                   torch.logspace(-30, 1, 10_001), -torch.logspace(-30, 1, 10_001)])
    w_hh = torch.zeros(1, 1, dtype=torch.bfloat16 if loop.endswith("bf16") else torch.float32)
    run = getattr(fused.compiled_loops, loop)
    out = x.clone().view(1, -1, 1)
    run(out, torch.zeros(x.shape[0], 1), w_hh, [x.shape[0]], fused.ACTIVATIONS.index("tanh"))
    assert ulps(out.view(-1), torch.tanh(x.double())).max() <= 1.5
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0]).view(1, -1, 1)
    run(special, torch.zeros(5, 1), w_hh, [5], fused.ACTIVATIONS.index("tanh"))
    assert torch.isnan(special[0, 0, 0]) and special.view(-1)[1:].tolist() == [1.0, -1.0, 0.0, 0.0]


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_mixed_precision_loops_stay_close_to_float32(monkeypatch, compiled, activation):
    if compiled and fused.compiled_loops is None:
        pytest.skip("compiled loop not built")
    if not compiled:
        monkeypatch.setattr(fused, "compiled_loops", None)
    torch.manual_seed(0)
    batch_sizes = [7, 7, 6, 3, 1]
    pre, h0 = torch.randn(5, 7, 32), torch.randn(7, 32)
    w_hh = torch.randn(32, 32) / 32**0.5
    exact, mixed = pre.clone(), pre.clone()
    fused.run_loop("forward", exact, h0, w_hh, batch_sizes, activation, mixed=False)
    fused.run_loop("forward", mixed, h0, w_hh, batch_sizes, activation, mixed=True)
    torch.testing.assert_close(mixed, exact, atol=3e-2, rtol=0)
    assert not torch.equal(mixed, exact)  # bfloat16 products really were used
    dz = torch.randn_like(pre)
    exact_dz, mixed_dz = dz.clone(), dz.clone()
    fused.run_loop("backward", exact_dz, exact, w_hh, batch_sizes, activation, mixed=False)
    fused.run_loop("backward", mixed_dz, exact, w_hh, batch_sizes, activation, mixed=True)
    torch.testing.assert_close(mixed_dz, exact_dz, atol=3e-2, rtol=0)


def forward_and_gradients(layer: ElmanRNN, x: torch.Tensor, ids: torch.Tensor, h0: torch.Tensor,
                          lengths: list[int] | None, table_rows: bool, autocast: bool) -> list[torch.Tensor]:
    """Outputs, final states and every gradient of one forward and backward pass, with or without autocast."""
    layer.zero_grad()
    x.grad = h0.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out, h_n = (layer.forward_from_table(x, ids, h0, lengths=lengths) if table_rows
                    else layer(x, h0, lengths=lengths))
    assert out.dtype == h_n.dtype == torch.float32
    (out.square().sum() + h_n.sum()).backward()
    return [out, h_n, x.grad, h0.grad, *[p.grad for p in layer.parameters()]]


@pytest.mark.parametrize("lengths", [None, LENGTHS])
@pytest.mark.parametrize("table_rows", [False, True])  # the input itself, or rows of a table
def test_autocast_bfloat16_gives_float32_results_close_to_full_precision(lengths, table_rows):
    torch.manual_seed(0)
    layer = ElmanRNN(3, 1024, num_layers=2, bidirectional=True)  # 5 rows of 1024 units: where bfloat16 pays
    x = torch.randn(4 if table_rows else 6, *((3,) if table_rows else (5, 3)), requires_grad=True)
    ids = torch.randint(0, 4, (6, 5))
    h0 = torch.randn(4, 5, 1024, requires_grad=True)
    exact, mixed = (forward_and_gradients(layer, x, ids, h0, lengths, table_rows, autocast)
                    for autocast in (False, True))
    assert not torch.equal(mixed[0], exact[0])  # bfloat16 products really were used
    for exact_tensor, mixed_tensor in zip(exact, mixed, strict=True):
        assert mixed_tensor.dtype == torch.float32
        scale = exact_tensor.abs().max().item()
        torch.testing.assert_close(mixed_tensor, exact_tensor, atol=0.03 * scale, rtol=0)


@pytest.mark.parametrize("batch,hidden", [(1, 512), (5, 16), (16, 512), (64, 256)])
def test_autocast_runs_float32_where_bfloat16_would_be_slower(batch, hidden):
    torch.manual_seed(0)
    layer = ElmanRNN(3, hidden)
    x, ids = torch.randn(6, batch, 3, requires_grad=True), torch.randint(0, 4, (6, batch))
    h0 = torch.randn(1, batch, hidden, requires_grad=True)
    exact, autocast = (forward_and_gradients(layer, x, ids, h0, None, False, enabled) for enabled in (False, True))
    for exact_tensor, autocast_tensor in zip(exact, autocast, strict=True):
        assert torch.equal(autocast_tensor, exact_tensor)


def test_bfloat16_pays_for_a_wide_state_of_more_than_one_row():
    assert not bfloat16_pays(1, 1024) and not bfloat16_pays(2, 1024) and bfloat16_pays(4, 1024)
    assert not bfloat16_pays(16, 512) and bfloat16_pays(32, 512) and bfloat16_pays(64, 640)
    assert not bfloat16_pays(128, 256)
    assert not bfloat16_pays(4096, 128)
