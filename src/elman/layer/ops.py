"""The fused recurrence as PyTorch operators, so that ``torch.compile``, ``torch.export``, ONNX export,
``torch.jit.trace`` and the meta device see it as one call with known shapes, as they see ``aten::rnn_tanh``.

    elman::rnn_direction(input, h0, weight_ih, weight_hh, bias_ih?, bias_hh?, lengths?, rows?,
                         nonlinearity, reverse, mixed) -> (output, h_n)

        One layer, one direction (``fused.py`` has the equations):
        input      (T, B, I) time-major; or, with ``rows`` (T, B) int64, a table (V, I) whose row
                   ``rows[t, b]`` is step t of sequence b (an embedding's weight and character ids)
        h0         (B, H)            weight_ih (H, I)    weight_hh (H, H)    bias_ih, bias_hh (H,) or None
        lengths    (B,) integers in [1, T], any order: the valid steps of each sequence; None: all T
        nonlinearity  "tanh", "relu" or "sigmoid"
        reverse    walk each sequence from its last valid step to its first
        mixed      bfloat16 GEMMs with float32 states and sums (the caller's autocast)
        output     (T, B, H): h_t at valid steps, 0 past each length
        h_n        (B, H): the state after each sequence's last step in walking order

    elman::rnn_direction_backward(...)    its gradients (hand-written BPTT), asked for by ``output_mask``
    elman::hashed_dropout(input, dropped_levels, scale, seed) -> output       dropout.py's mask, float32 CPU

Each has a CPU kernel (the compiled loops where built, else the Python loops), a kernel for every other
device (the Python loops), and a fake implementation that only computes shapes. Autograd is registered with
``torch.library.register_autograd``. A backward pass that builds a graph (``create_graph=True``: gradient
penalties, ``gradgradcheck``, Hessian-vector products) recomputes the direction with the reference loop and
differentiates that, so second-order gradients are exact and never silently missing.
"""

from __future__ import annotations

import torch
from torch import Tensor

from elman.layer import fused, onnx_registration
from elman.layer.reference import reference_direction

OPERATORS = ("rnn_direction", "rnn_direction_backward", "hashed_dropout")
LIBRARY = torch.library.Library("elman", "DEF")
LIBRARY.define(
    "rnn_direction(Tensor input, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, "
    "Tensor? lengths, Tensor? rows, str nonlinearity, bool reverse, bool mixed) -> (Tensor, Tensor)"
)
LIBRARY.define(
    "rnn_direction_backward(Tensor? grad_output, Tensor? grad_h_n, Tensor input, Tensor h0, Tensor weight_ih, "
    "Tensor weight_hh, Tensor? lengths, Tensor? rows, Tensor output, str nonlinearity, bool reverse, bool mixed, "
    "bool[5] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
)
LIBRARY.define("hashed_dropout(Tensor input, int dropped_levels, float scale, Tensor seed) -> Tensor")

# CompositeExplicitAutograd: one kernel for every device; the compiled loops are chosen inside for CPU tensors.
LIBRARY.impl("rnn_direction", fused.rnn_direction, "CompositeExplicitAutograd")
LIBRARY.impl("rnn_direction_backward", fused.rnn_direction_backward, "CompositeExplicitAutograd")


def _hashed_dropout(x: Tensor, dropped_levels: int, scale: float, seed: Tensor) -> Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    fused.compiled_loops.dropout_apply(x, y, dropped_levels, scale, int(seed))
    return y


LIBRARY.impl("hashed_dropout", _hashed_dropout, "CPU")


@torch.library.register_fake("elman::rnn_direction", lib=LIBRARY)
def _rnn_direction_shapes(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, rows, nonlinearity, reverse,
                          mixed):
    steps, batch = (rows if rows is not None else input).shape[:2]
    hidden = weight_hh.shape[0]
    return h0.new_empty(steps, batch, hidden), h0.new_empty(batch, hidden)


@torch.library.register_fake("elman::rnn_direction_backward", lib=LIBRARY)
def _rnn_direction_backward_shapes(grad_output, grad_h_n, input, h0, weight_ih, weight_hh, lengths, rows, output,
                                   nonlinearity, reverse, mixed, output_mask):
    shapes = (input.shape, h0.shape, weight_ih.shape, weight_hh.shape, weight_hh.shape[:1])
    return tuple(output.new_empty(shape if wanted else (0,)) for shape, wanted in zip(shapes, output_mask, strict=True))


@torch.library.register_fake("elman::hashed_dropout", lib=LIBRARY)
def _hashed_dropout_shape(input, dropped_levels, scale, seed):
    return torch.empty_like(input)


def _save_direction(ctx, inputs, output) -> None:
    x, h0, w_ih, w_hh, b_ih, b_hh, lengths, rows, nonlinearity, reverse, mixed = inputs
    ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, rows, output[0])
    ctx.arguments = nonlinearity, reverse, mixed
    ctx.set_materialize_grads(False)  # an output nobody read has no gradient, not one of zeros


def _direction_gradients(ctx, grad_output: Tensor | None, grad_h_n: Tensor | None,
                         backward_kernel=torch.ops.elman.rnn_direction_backward.default):
    """The registered backward: the hand-written BPTT through ``backward_kernel`` (the operator, which tracing
    records; ``_EagerDirection`` calls the kernel itself), or, with ``create_graph``, a differentiable one."""
    x, h0, w_ih, w_hh, b_ih, b_hh, lengths, rows, output = ctx.saved_tensors
    nonlinearity, reverse, mixed = ctx.arguments
    need = ctx.needs_input_grad[:6]
    if grad_output is None and grad_h_n is None:
        return (None,) * 11
    if torch.is_grad_enabled():
        grads = _differentiable_gradients((x, h0, w_ih, w_hh, b_ih, b_hh), need, grad_output, grad_h_n,
                                          lengths, rows, nonlinearity, reverse)
        return (*grads, None, None, None, None, None)
    wanted = [need[0], need[1], need[2], need[3], need[4] or need[5]]
    grads = backward_kernel(grad_output, grad_h_n, x, h0, w_ih, w_hh, lengths, rows, output, nonlinearity, reverse,
                            mixed, wanted)
    grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b = (grad if ok else None
                                                     for grad, ok in zip(grads, wanted, strict=True))
    return (grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b if need[4] else None, grad_b if need[5] else None,
            None, None, None, None, None)


def _differentiable_gradients(inputs, need, grad_output, grad_h_n, lengths, rows, nonlinearity, reverse):
    """The gradients of ``inputs`` as a graph of differentiable operations (for ``create_graph=True``): the
    direction recomputed by the reference loop and differentiated by autograd. Mixed precision is not
    repeated here: the second-order terms are float32."""
    wanted = [tensor for tensor, ok in zip(inputs, need, strict=True) if ok]
    output, h_n = reference_direction(*inputs, nonlinearity, reverse, lengths, rows)
    pairs = [(out, grad) for out, grad in ((output, grad_output), (h_n, grad_h_n)) if grad is not None]
    grads = torch.autograd.grad([out for out, _ in pairs], wanted, [grad for _, grad in pairs], create_graph=True,
                                allow_unused=True, materialize_grads=True)
    found = iter(grads)
    return [next(found) if ok else None for ok in need]


torch.library.register_autograd("elman::rnn_direction", _direction_gradients, setup_context=_save_direction,
                                lib=LIBRARY)


def _save_dropout(ctx, inputs, output) -> None:
    _, ctx.dropped_levels, ctx.scale, seed = inputs
    ctx.save_for_backward(seed)


def _dropout_gradient(ctx, grad: Tensor):
    (seed,) = ctx.saved_tensors  # the same mask again: the op is its own derivative, to any order
    return torch.ops.elman.hashed_dropout(grad, ctx.dropped_levels, ctx.scale, seed), None, None, None


torch.library.register_autograd("elman::hashed_dropout", _dropout_gradient, setup_context=_save_dropout, lib=LIBRARY)

hashed_dropout = torch.ops.elman.hashed_dropout.default


class _EagerDirection(torch.autograd.Function):
    """The registered autograd (``_save_direction``, ``_direction_gradients``) around the kernels themselves, for
    eager calls with gradients. Through the dispatcher each call goes C++ -> Python several times (operator,
    ``register_autograd``'s wrapper, which also re-reads the schema, kernel; again for the backward), and a
    Function with ``setup_context`` binds its arguments with ``inspect.signature`` on every call: together
    ~0.1 ms of a 1 ms training step. Never used where anything traces: there the operators are called."""

    @staticmethod
    def forward(ctx, *arguments):
        output = fused.rnn_direction(*arguments)
        _save_direction(ctx, arguments, output)
        return output

    @staticmethod
    def backward(ctx, grad_output, grad_h_n):
        return _direction_gradients(ctx, grad_output, grad_h_n, fused.rnn_direction_backward)


def intercepted(x: Tensor) -> bool:
    """Whether anything traces or intercepts calls on ``x`` (torch.compile, torch.export, torch.jit.trace, a
    dispatch mode, fake or meta tensors): then only what goes through the dispatcher is seen."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing() or bool(torch._C._len_torch_dispatch_stack())
            or type(x) is not Tensor or x.is_meta)


def rnn_direction(*arguments) -> tuple[Tensor, Tensor]:
    """``elman::rnn_direction``: the operator where anything traces or intercepts (``intercepted``), else its
    kernel, inside ``_EagerDirection`` where a gradient is wanted: the same computation without the
    dispatcher's round trips (~20 us per call)."""
    if intercepted(arguments[0]):
        return torch.ops.elman.rnn_direction.default(*arguments)
    if torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in arguments):
        return _EagerDirection.apply(*arguments)
    return fused.rnn_direction(*arguments)


onnx_registration.install()
