"""ElmanRNN outside eager mode, next to nn.RNN: torch.compile, torch.export, ONNX, jit.trace, torch.func, second
order, the meta device, nn.RNN's attributes, and what ``import elman`` loads. No path may give a silently wrong
result: each either matches eager or refuses with an error that says what works."""

import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from elman import ElmanRNN

LENGTHS = torch.tensor([7, 3, 5, 1])  # unsorted
OTHER_LENGTHS = torch.tensor([9, 2, 3, 9, 1, 4])  # another batch and length than traced


def make_pair(nonlinearity="tanh", **kwargs):
    torch.manual_seed(0)
    theirs = nn.RNN(3, 5, num_layers=2, bidirectional=True, nonlinearity=nonlinearity, **kwargs)
    ours = ElmanRNN(3, 5, num_layers=2, bidirectional=True, nonlinearity=nonlinearity, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


class WithLengths(nn.Module):
    """A model whose forward calls the layer with lengths (and nn.RNN through packing, for comparison)."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, lengths):
        if isinstance(self.rnn, ElmanRNN):
            return self.rnn(x, lengths=lengths)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        output, h_n = self.rnn(packed)
        return nn.utils.rnn.pad_packed_sequence(output, total_length=x.shape[0])[0], h_n


def eager(module, x, lengths):
    with torch.no_grad():
        return module(x, lengths)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "sigmoid"])
def test_compile_fullgraph_with_lengths_has_no_graph_break_and_matches_eager(nonlinearity):
    torch.manual_seed(0)
    layer = ElmanRNN(3, 5, num_layers=2, bidirectional=True, nonlinearity=nonlinearity)
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(7, 4, 3, requires_grad=True)
    out, h_n = compiled(x, lengths=LENGTHS)
    (out.square().sum() + h_n.sum()).backward()
    compiled_grads = [x.grad, *[p.grad for p in layer.parameters()]]
    x.grad = None
    layer.zero_grad()
    expected_out, expected_h_n = layer(x, lengths=LENGTHS)
    (expected_out.square().sum() + expected_h_n.sum()).backward()
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(h_n, expected_h_n)
    for got, expected in zip(compiled_grads, [x.grad, *[p.grad for p in layer.parameters()]], strict=True):
        torch.testing.assert_close(got, expected)
    assert dict(counters["graph_break"]) == {}


def test_compile_recompiles_at_most_once_for_new_lengths_and_batches():
    _, layer = make_pair()
    compiled = torch.compile(layer, fullgraph=True)
    for steps, batch in [(7, 4), (9, 6), (12, 3), (5, 8)]:
        x = torch.randn(steps, batch, 3)
        lengths = torch.randint(1, steps + 1, (batch,))
        torch.testing.assert_close(compiled(x, lengths=lengths), layer(x, lengths=lengths))
    assert counters["stats"]["unique_graphs"] <= 2  # the first shapes, then one dynamic graph


def test_compile_of_a_training_step_with_dropout_matches_eager():
    """Inductor draws random numbers its own way unless told to use torch's (as for nn.Dropout); with torch's,
    the masks, drawn from a seed the graph draws, are eager's."""
    torch.manual_seed(0)
    layer = ElmanRNN(3, 5, num_layers=3, dropout=0.3, weight_dropout=0.2).train()
    x = torch.randn(6, 4, 3, requires_grad=True)
    results = []
    for run in (torch.compile(lambda x: layer(x)[0].sum(), fullgraph=True), lambda x: layer(x)[0].sum()):
        torch.manual_seed(1)
        with torch._inductor.config.patch(fallback_random=True):
            loss = run(x)
        results.append((loss, *torch.autograd.grad(loss, [x, *layer.parameters()])))
    for got, expected in zip(*results, strict=True):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("strict", [False, True])
def test_export_with_dynamic_batch_and_time_runs_exactly(strict):
    _, layer = make_pair()
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    program = torch.export.export(WithLengths(layer), (torch.randn(7, 4, 3), LENGTHS),
                                  dynamic_shapes=({0: time, 1: batch}, {0: batch}), strict=strict)
    assert any("elman.rnn_direction" in str(node.target) for node in program.graph.nodes)
    x = torch.randn(9, 6, 3)
    for got, expected in zip(program.module()(x, OTHER_LENGTHS), eager(WithLengths(layer), x, OTHER_LENGTHS),
                             strict=True):
        assert torch.equal(got, expected)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "sigmoid"])
def test_onnx_export_is_one_rnn_node_per_layer_and_direction_and_matches_in_onnxruntime(nonlinearity, tmp_path):
    theirs, ours = make_pair("tanh" if nonlinearity == "sigmoid" else nonlinearity)
    ours = ElmanRNN(3, 5, num_layers=2, bidirectional=True, nonlinearity=nonlinearity).eval() \
        if nonlinearity == "sigmoid" else ours.eval()
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    program = torch.onnx.export(WithLengths(ours), (torch.randn(7, 4, 3), LENGTHS), dynamo=True, verbose=False,
                                dynamic_shapes=({0: time, 1: batch}, {0: batch}))
    program.save(tmp_path / "ours.onnx")
    assert sum(node.op_type == "RNN" for node in program.model.graph) == 4  # 2 layers x 2 directions
    session = onnxruntime.InferenceSession(tmp_path / "ours.onnx")
    x = torch.randn(9, 6, 3)
    outputs = session.run(None, {"x": x.numpy(), "lengths": OTHER_LENGTHS.numpy()})
    for got, expected in zip(outputs, eager(WithLengths(ours), x, OTHER_LENGTHS), strict=True):
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
    if nonlinearity != "sigmoid":  # the same weights in nn.RNN give the same outputs
        np.testing.assert_allclose(outputs[0], eager(WithLengths(theirs), x, OTHER_LENGTHS)[0].numpy(), atol=1e-5)


def test_legacy_onnx_exporter_refuses_by_naming_dynamo(tmp_path):
    _, ours = make_pair()
    model = WithLengths(ours.eval())
    with pytest.raises(Exception, match=r"dynamo=True"):
        torch.onnx.export(model, (torch.randn(7, 4, 3), LENGTHS), str(tmp_path / "legacy.onnx"), dynamo=False)


def test_jit_trace_records_the_recurrence_also_after_save_and_load(tmp_path):
    theirs, ours = make_pair()
    x = torch.randn(7, 4, 3)
    with torch.no_grad():
        traced = torch.jit.trace(ours, (x,))
    traced.save(tmp_path / "traced.pt")
    loaded = torch.jit.load(tmp_path / "traced.pt")
    other = torch.randn(11, 2, 3)  # a trace replays the recorded operators at any shape
    for module in (traced, loaded):
        torch.testing.assert_close(module(other)[0], theirs(other)[0])


def functional_loss(module, x):
    names = [name for name, _ in module.named_parameters()]

    def loss(params, x):
        output, h_n = torch.func.functional_call(module, dict(zip(names, params, strict=True)), (x,))
        return output.square().sum() + h_n.sum()

    return loss, tuple(module.parameters())


@pytest.mark.parametrize("transform", ["grad", "jacrev", "jacfwd"])
def test_torch_func_transforms_match_nn_rnn(transform):
    theirs, ours = make_pair(dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    results = []
    for module in (theirs, ours):
        loss, params = functional_loss(module, x)
        results.append(getattr(torch.func, transform)(loss)(params, x))
    for got, expected in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, expected)


def test_torch_func_vmap_matches_a_loop():
    theirs, ours = make_pair()
    xs = torch.randn(3, 5, 2, 3)
    batched = torch.func.vmap(lambda x: ours(x)[0])(xs)
    torch.testing.assert_close(batched, torch.stack([theirs(x)[0] for x in xs]))


def test_second_order_gradients_match_nn_rnn_and_are_never_silently_none():
    theirs, ours = make_pair(dtype=torch.float64)
    x = torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True)
    penalties = []
    for module in (theirs, ours):
        output, _ = module(x)
        (grad_x,) = torch.autograd.grad(output.square().sum(), x, create_graph=True)
        penalty = grad_x.square().sum()  # a gradient penalty: needs the gradient of a gradient
        penalties.append(torch.autograd.grad(penalty, [x, *module.parameters()], allow_unused=True))
    for got, expected in zip(penalties[1], penalties[0], strict=True):
        assert got is not None
        torch.testing.assert_close(got, expected)


def test_forward_on_the_meta_device_gives_shapes():
    layer = ElmanRNN(3, 5, num_layers=2, bidirectional=True, batch_first=True, device="meta")
    output, h_n = layer(torch.empty(4, 7, 3, device="meta"), lengths=LENGTHS)
    assert output.device.type == h_n.device.type == "meta"
    assert output.shape == (4, 7, 10) and h_n.shape == (4, 4, 5)


def test_nn_rnn_attributes_are_there():
    theirs, ours = make_pair()
    assert ours._flat_weights_names == theirs._flat_weights_names
    assert ours._all_weights == theirs._all_weights
    assert [tuple(w.shape) for w in ours._flat_weights] == [tuple(w.shape) for w in theirs._flat_weights]
    assert all(a is b for a, b in zip(ours._flat_weights, ours.parameters(), strict=True))
    assert [[tuple(w.shape) for w in ws] for ws in ours.all_weights] == \
        [[tuple(w.shape) for w in ws] for ws in theirs.all_weights]
    assert (ours.mode, ours.proj_size) == (theirs.mode, theirs.proj_size) == ("RNN_TANH", 0)
    assert ElmanRNN(2, 3, nonlinearity="relu").mode == "RNN_RELU"
    before = [w.clone() for w in ours.parameters()]
    ours.flatten_parameters()
    assert all(torch.equal(a, b) for a, b in zip(before, ours.parameters(), strict=True))


@pytest.mark.parametrize("argument", ["batch_first", "bias", "bidirectional"])
def test_flags_must_be_booleans_as_in_nn_rnn(argument):
    # nn.RNN checks batch_first and bias, and takes bidirectional="False" as True; ElmanRNN checks all three
    for cls in (nn.RNN, ElmanRNN) if argument != "bidirectional" else (ElmanRNN,):
        with pytest.raises(TypeError, match=f"{argument} should be of type bool"):
            cls(3, 5, **{argument: "False"})


def test_proj_size_is_refused_as_in_nn_rnn():
    for cls in (nn.RNN, ElmanRNN):
        with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
            cls(3, 5, proj_size=2)


@pytest.mark.parametrize("x,hx", [
    (torch.randn(5, 2, 7), None),  # input_size
    (torch.randn(5, 2, 3), torch.zeros(1, 2, 5)),  # hidden size
    (torch.randn(5, 2, 3), torch.zeros(2, 5)),  # hx of the wrong rank
])
def test_shape_errors_are_runtime_errors_as_in_nn_rnn(x, hx):
    for module in make_pair():
        with pytest.raises(RuntimeError):
            module(x, hx)


def test_import_elman_loads_only_the_layer_and_keeps_the_matplotlib_backend():
    code = ("import sys, matplotlib; matplotlib.use('pdf'); import elman; "
            "loaded = [m for m in sys.modules if m.startswith(('elman.training', 'elman.serve', 'elman.inference', "
            "'matplotlib.pyplot', 'fastapi', 'onnx'))]; "
            "assert not loaded, loaded; elman.load; import elman.inference.inspection, elman.training.plots; "
            "assert matplotlib.get_backend() == 'pdf', matplotlib.get_backend(); "
            "assert 'matplotlib.pyplot' not in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
