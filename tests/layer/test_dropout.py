"""Dropout with 16-bit masks: the rate, the scale, the gradient, repeatability and the edge cases."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from elman.layer import fused
from elman.layer.dropout import LEVELS, Dropout, dropout
from elman.threads import torch_threads


@pytest.fixture(params=["compiled", "torch"])
def words(request, monkeypatch):
    """Where the random bits come from: the compiled pair hash (CPU, when built) or torch's words."""
    if request.param == "compiled" and fused.compiled_loops is None:
        pytest.skip("compiled module not built")
    if request.param == "torch":
        monkeypatch.setattr(fused, "compiled_loops", None)
    return request.param


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_drops_a_fraction_p_and_scales_the_rest_to_keep_the_mean(p, dtype, device, words):
    torch.manual_seed(0)
    x = torch.ones(400_001, dtype=dtype, device=device)  # not a whole number of 64-bit words
    y = dropout(x, p)
    assert y.dtype == dtype
    dropped = (y == 0).double().mean().item()
    assert abs(dropped - p) < 4 * (p * (1 - p) / x.numel()) ** 0.5 + 1e-9
    kept = y[y != 0]
    scale = LEVELS / (LEVELS - round(p * LEVELS))  # in the dtype's own precision, float64 included
    torch.testing.assert_close(kept, torch.full_like(kept, scale), rtol=0, atol=0)
    assert abs(y.double().mean().item() - 1) < 0.01


def test_masks_are_independent_across_positions_of_one_word_and_across_words(words):
    """Elements share random words (four to a 64-bit word drawn by torch, two to a 32-bit hash in the
    compiled mask); each must still be dropped on its own, and so must neighbouring words."""
    torch.manual_seed(1)
    kept = dropout(torch.ones(200_000, 4), 0.5) != 0
    for other in (1, 3):  # the same word's (or hash's) next 16 bits, and the word's highest 16 bits
        both = (kept[:, 0] & kept[:, other]).double().mean().item()
        assert abs(both - 0.25) < 0.01
    assert abs(kept[:, 3].double().mean().item() - 0.5) < 0.01
    neighbours = (kept[:-1, 0] & kept[1:, 0]).double().mean().item()  # 4 elements apart: other words
    assert abs(neighbours - 0.25) < 0.01


def test_the_compiled_mask_is_the_same_on_one_thread_and_on_several():
    if fused.compiled_loops is None:
        pytest.skip("compiled module not built")
    masks = []
    for threads in (1, 2):
        with torch_threads(threads):
            torch.manual_seed(4)
            masks.append(dropout(torch.ones(100_003), 0.3))
    torch.testing.assert_close(masks[0], masks[1], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # float32: the mask is redrawn, not kept
def test_gradient_is_the_same_mask_and_scale(words, dtype):
    torch.manual_seed(2)
    x = torch.randn(70, 50, dtype=dtype, requires_grad=True)
    y = dropout(x, 0.3)
    upstream = torch.randn_like(x, requires_grad=True)
    (grad,) = torch.autograd.grad(y, x, upstream, create_graph=True)
    torch.testing.assert_close(grad.detach() * x.detach(), y.detach() * upstream.detach())
    (second,) = torch.autograd.grad(grad, upstream, torch.ones_like(x))  # linear in the gradient too
    torch.testing.assert_close(second, y.detach() / x.detach())


def test_same_seed_same_mask_and_the_module_follows_train_and_eval(words):
    layer = Dropout(0.5)
    x = torch.randn(3, 8, 16)
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    torch.testing.assert_close(layer(x), first)
    assert not torch.equal(layer(x), first)
    layer.eval()
    assert layer(x) is x


@given(st.lists(st.integers(1, 9), min_size=0, max_size=3), st.sampled_from([0.0, 1e-6, 0.25, 1.0]))
@settings(max_examples=40, deadline=None)
def test_any_shape_keeps_shape_dtype_and_the_edge_rates(shape, p):
    x = torch.randn(shape, dtype=torch.float32) + 5  # no zeros of its own
    y = dropout(x, p)
    assert y.shape == x.shape and y.dtype == x.dtype
    if round(p * LEVELS) == 0:
        assert y is x
    if p == 1.0:
        assert torch.count_nonzero(y) == 0


def test_a_rate_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        dropout(torch.ones(2), 1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        Dropout(-0.1)
