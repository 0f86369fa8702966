"""The fast path: one direction of one layer as a single autograd Function with hand-written BPTT.

For a batch of ``B`` sequences of ``T`` steps (time-major), inputs ``x`` of shape ``(T, B, I)`` and a
start state ``h0`` of shape ``(B, H)``, the layer computes

    z_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh        z_t, h_t: (B, H)
    h_t = act(z_t)                                          h_{-1} = h0

and returns all ``h_t`` as ``out`` of shape ``(T, B, H)``.

Forward: the input projection ``x_t W_ih^T + b`` for all steps is one GEMM written straight into
``out``; then each step adds ``h_{t-1} W_hh^T`` in place (one GEMM) and applies ``act`` in place.
Without ``W_ih`` (None, and no biases), ``x`` is a table ``(V, H)`` of projections the caller computed
more cheaply (``ElmanRNN.forward_from_table``: one per row of an embedding table), and ``rows`` ``(T, B)``
says which one each step reads; one gather writes them into ``out``.

Backward (BPTT): with ``g_t = dL/dh_t`` from the outputs,

    dz_t     = (g_t + dz_{t+1} W_hh) * act'(z_t)            one GEMM per step, in place
    dL/dh0   = dz_0 W_hh
    dL/dW_hh = sum_t dz_t^T h_{t-1}     dL/dW_ih = sum_t dz_t^T x_t
    dL/db    = sum_t dz_t               dL/dx_t  = dz_t W_ih

where the last four are each one GEMM (or one reduction) over all steps after the loop; with a table
and ``rows``, row v of the table's gradient is the sum of the ``dz_t`` of the steps that read it (one
index_add). ``act'`` is computed from the saved outputs (``1 - h^2`` for tanh, ``h (1 - h)`` for
sigmoid, ``h > 0`` for relu).

Variable lengths without packing: the caller sorts the batch by length, longest first, so that at step
``t`` the sequences still running are the leading ``steps_active[t]`` rows. Each step then works on
that prefix of rows (a contiguous view), the rows that have ended are left alone, and the padded
positions of ``out`` are zeroed once after the loop. Nothing is packed or copied per step. The final
states ``h_n`` (each sequence's last valid step) are a second output, so that a caller who reads only
them (a classifier pooling the last state) hands back only their gradient: the backward pass then starts
from zeros instead of a full ``(T, B, H)`` gradient that autograd would build and copy.

The two sequential loops exist twice: here in Python (any device) and in ``_loops.cpp`` (CPU, compiled
at install time). They are the same few lines; the compiled one is used for CPU tensors when it was
built, because on small problems the interpreter's per-step cost is most of the run time.

Mixed precision: under ``torch.autocast(device, dtype=torch.bfloat16)`` every GEMM above reads bfloat16
operands (float32 accumulation inside, a bfloat16 product out; AVX512-BF16 or AMX on CPUs that have them,
several times the float32 speed), while the states ``h_t``, the ``dz_t`` and every gradient stay float32.
The layer's output is float32.
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from elman.threads import torch_threads

ACTIVATIONS = ("tanh", "relu", "sigmoid")

# What this code calls in the compiled module; a module built from an older _loops.cpp may lack some.
COMPILED_FUNCTIONS = ("forward_loop", "backward_loop", "forward_loop_bf16", "backward_loop_bf16", "dropout_apply")


def _compiled_module():
    """The compiled loops (``_loops.cpp``), or None where they were not built. A build older than this code
    is set aside with a warning that says how to rebuild it, and the Python loops run meanwhile."""
    try:  # built by `pip install --no-build-isolation .` when torch and a compiler are present
        from elman.layer import _loops
    except ImportError:
        return None
    missing = [name for name in COMPILED_FUNCTIONS if not hasattr(_loops, name)]
    if missing:
        warnings.warn(f"{_loops.__file__} was built from an older _loops.cpp (it has no {', '.join(missing)}); "
                      "the slower Python loops run instead until it is rebuilt: pip install --no-build-isolation . "
                      "(or, in a source checkout, python setup.py build_ext --inplace)", RuntimeWarning, stacklevel=2)
        return None
    return _loops


compiled_loops = _compiled_module()

# Below this many multiply-adds per step, a second thread costs more in synchronisation than it saves.
SINGLE_THREAD_STEP_MACS = 1 << 19


def activate_(x: Tensor, activation: str) -> None:
    if activation == "tanh":
        x.tanh_()
    elif activation == "relu":
        x.relu_()
    else:
        x.sigmoid_()


def activation_slope(h: Tensor, activation: str) -> Tensor:
    """act'(z) expressed through h = act(z); same shape as ``h``."""
    if activation == "tanh":
        return 1 - h * h
    if activation == "sigmoid":
        return h * (1 - h)
    return (h > 0).to(h.dtype)


def accumulate_product(c: Tensor, a: Tensor, w: Tensor) -> None:
    """``c += a @ w`` in place; a ``w`` of lower precision than ``c`` (mixed precision) makes the product
    read ``a`` in that precision too."""
    if w.dtype == c.dtype:
        c.addmm_(a, w)
    else:
        c.add_(torch.mm(a.to(w.dtype), w))


def forward_loop(out: Tensor, h0: Tensor, w_hh: Tensor, steps_active: list[int], activation: str) -> None:
    """In place: ``out[t]`` holds the input projection on entry and ``h_t`` on return."""
    w_hh_t = w_hh.t()
    h = h0
    for t, n in enumerate(steps_active):
        step = out[t, :n]
        accumulate_product(step, h[:n], w_hh_t)
        activate_(step, activation)
        h = step


def backward_loop(dz: Tensor, slope: Tensor, w_hh: Tensor, steps_active: list[int]) -> None:
    """In place: ``dz[t]`` holds dL/dh_t from the outputs on entry and dL/dz_t on return."""
    for t in range(len(steps_active) - 1, -1, -1):
        n = steps_active[t]
        step = dz[t, :n]
        step.mul_(slope[t, :n])
        if t > 0:
            accumulate_product(dz[t - 1, :n], step, w_hh)


def matmul(a: Tensor, b: Tensor, mixed: bool) -> Tensor:
    """``a @ b``; with ``mixed``, computed from bfloat16 copies and returned as float32."""
    if not mixed:
        return torch.mm(a, b)
    return torch.mm(a.to(torch.bfloat16), b.to(torch.bfloat16)).float()


def _use_compiled(*tensors: Tensor, mixed: bool = False) -> bool:
    """The compiled loops take contiguous float32/float64 CPU tensors (float32 only in mixed precision);
    anything else runs the Python loop."""
    dtypes = (torch.float32,) if mixed else (torch.float32, torch.float64)
    return compiled_loops is not None and all(
        t.device.type == "cpu" and t.is_contiguous() and t.dtype in dtypes for t in tensors)


def autocast_off(device: str) -> AbstractContextManager:
    """A block that runs without autocast on ``device`` (a device type, e.g. "cpu"). Entering even a disabled
    autocast costs microseconds, which small calls notice, so it is entered only when autocast is on."""
    return torch.autocast(device, enabled=False) if torch.is_autocast_enabled(device) else nullcontext()


def _threads_for(batch: int, hidden: int, device: torch.device) -> torch_threads:
    """One thread for tiny per-step GEMMs on the CPU (the caller's setting is restored afterwards)."""
    small = device.type == "cpu" and batch * hidden * hidden < SINGLE_THREAD_STEP_MACS
    return torch_threads(1 if small else None)


def _run_forward_loop(out: Tensor, h0: Tensor, w_hh: Tensor, steps_active: list[int], activation: str,
                      mixed: bool):
    if mixed:
        w_hh = w_hh.to(torch.bfloat16).contiguous()
    with _threads_for(out.shape[1], out.shape[2], out.device):
        if _use_compiled(out, h0, mixed=mixed):
            loop = compiled_loops.forward_loop_bf16 if mixed else compiled_loops.forward_loop
            loop(out, h0, w_hh, steps_active, ACTIVATIONS.index(activation))
        else:
            forward_loop(out, h0, w_hh, steps_active, activation)


def _run_backward_loop(dz: Tensor, out: Tensor, w_hh: Tensor, steps_active: list[int], activation: str,
                       mixed: bool):
    """``dz`` holds dL/dh_t on entry and dL/dz_t on return; ``out`` holds the h_t of the forward pass."""
    if mixed:
        w_hh = w_hh.to(torch.bfloat16).contiguous()
    with _threads_for(dz.shape[1], dz.shape[2], dz.device):
        if _use_compiled(dz, out, mixed=mixed):  # act'(z_t) computed from h_t inside the loop
            loop = compiled_loops.backward_loop_bf16 if mixed else compiled_loops.backward_loop
            loop(dz, out, w_hh, steps_active, ACTIVATIONS.index(activation))
        else:
            backward_loop(dz, activation_slope(out, activation), w_hh, steps_active)


def recurrence_forward(x, h0, w_ih, w_hh, b_ih, b_hh, activation, padding, rows=None, mixed=False) -> Tensor:
    """The forward pass alone, ``out`` (T, B, H) (arguments as ``FusedElmanDirection``); used directly when no
    gradient is wanted."""
    if w_ih is None:  # x is a table of projections; the loop works in place on the gathered rows
        T, B = rows.shape
        out = x.index_select(0, rows.reshape(-1))
    else:
        T, B, I = x.shape
        x_flat = x.reshape(T * B, I)
        if b_ih is None or mixed:
            out = matmul(x_flat, w_ih.t(), mixed)
            if b_ih is not None:
                out += b_ih + b_hh
        else:  # the bias rides along in the GEMM
            out = torch.addmm(b_ih + b_hh, x_flat, w_ih.t())
    out = out.view(T, B, w_hh.shape[0])
    _run_forward_loop(out, h0.contiguous(), w_hh, running_rows(padding, T, B), activation, mixed)
    if padding is not None:
        out.masked_fill_(padding.padded, 0)
    return out


def running_rows(padding: Padding | None, steps: int, batch: int) -> list[int]:
    """The rows still running at each of the ``steps`` steps (all ``batch`` of them without padding)."""
    return [batch] * steps if padding is None else padding.steps_active


def final_states(out: Tensor, padding: Padding | None) -> Tensor:
    """(T, B, H) -> (B, H): each sequence's state at its last valid step (a view of ``out`` when every
    sequence runs all T steps)."""
    return out[-1] if padding is None else out.gather(0, padding.last_steps(out.shape[2])).squeeze(0)


class FusedElmanDirection(torch.autograd.Function):
    """One layer, one direction. See the module docstring for the equations.

    Args (to ``apply``):
        x: (T, B, I) time-major input, batch sorted by length (longest first) when lengths vary; or, when
            ``w_ih`` is None, a table (V, H) of input projections with their biases, read at ``rows``.
        h0: (B, H) start state.
        w_ih: (H, I), or None (see ``x``).
        w_hh: (H, H); b_ih, b_hh: (H,) or both None (always None without ``w_ih``).
        activation: one of ``ACTIVATIONS``.
        padding: where the batch is padded (``Padding``); None when every sequence has length T.
        rows: (T, B) int64 indices into the table ``x`` when ``w_ih`` is None; else None.
        mixed: bfloat16 GEMMs with float32 states and sums (see the module docstring).

    Returns:
        out: (T, B, H), h_t at valid positions and 0 at padded ones.
        h_n: (B, H), each sequence's state at its last valid step.
    """

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, activation, padding, rows, mixed):
        if mixed and w_ih is not None:  # converted once for the projection's GEMM and for dL/dW_ih's
            x = x.to(torch.bfloat16)
        out = recurrence_forward(x, h0, w_ih, w_hh, b_ih, b_hh, activation, padding, rows, mixed)
        saved_x = None if w_ih is None else x  # only dL/dW_ih reads it
        ctx.save_for_backward(saved_x, h0, w_ih, w_hh, out, rows)
        ctx.activation, ctx.padding, ctx.mixed = activation, padding, mixed
        ctx.has_bias = b_ih is not None
        ctx.table_rows = None if w_ih is not None else x.shape[0]
        ctx.set_materialize_grads(False)  # an output nobody read has no gradient, not one of zeros
        h_n = final_states(out, padding)
        return out, h_n.clone() if padding is None else h_n  # an output may not be a view of another

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_h_n):
        x, h0, w_ih, w_hh, out, rows = ctx.saved_tensors
        T, B, H = out.shape
        padding = ctx.padding
        # dz starts as dL/dh_t, a contiguous buffer the loop may overwrite; padded outputs are constants
        if grad_out is None:
            dz = torch.zeros_like(out)
        elif padding is None:
            dz = grad_out.clone(memory_format=torch.contiguous_format)
        else:
            dz = grad_out.masked_fill(padding.padded, 0).contiguous()
        if grad_h_n is not None:
            if padding is None:
                dz[-1] += grad_h_n
            else:
                dz.scatter_add_(0, padding.last_steps(H), grad_h_n.unsqueeze(0))
        mixed = ctx.mixed
        _run_backward_loop(dz, out, w_hh, running_rows(padding, T, B), ctx.activation, mixed)

        need = ctx.needs_input_grad
        dz_flat = dz.view(T * B, H)
        dz_gemm = dz_flat.to(torch.bfloat16) if mixed else dz_flat  # converted once for the GEMMs below
        grad_h0 = torch.mm(dz[0], w_hh) if need[1] else None
        grad_w_ih = matmul(dz_gemm.t(), x.reshape(T * B, -1), mixed) if need[2] else None
        grad_w_hh = None
        if need[3]:
            grad_w_hh = torch.mm(dz[0].t(), h0)
            if T > 1:
                grad_w_hh += matmul(dz_gemm[B:].t(), out[:-1].reshape(-1, H), mixed)
        grad_b = dz_flat.sum(0) if ctx.has_bias and (need[4] or need[5]) else None
        grad_x = None
        if need[0]:  # last: without W_ih, dz itself is the gradient of the projections read
            if w_ih is None:
                grad_x = dz_flat.new_zeros(ctx.table_rows, H).index_add_(0, rows.reshape(-1), dz_flat)
            else:
                grad_x = matmul(dz_gemm, w_ih, mixed).view(T, B, -1)
        return grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b, grad_b, None, None, None, None


@dataclass(frozen=True)
class Padding:
    """Where a batch of variable-length sequences is padded; built once per forward call.

    The batch must be sorted by length, longest first (``ElmanRNN`` does that).
    """

    lengths: Tensor  # (B,) int64, on the input's device
    steps_active: list[int]  # T ints: sequences still running at step t
    padded: Tensor  # (T, B, 1) bool: step t of sequence b is padding

    @classmethod
    def from_sorted_lengths(cls, lengths: Tensor, steps: int, device: torch.device) -> Padding:
        padded = torch.arange(steps).unsqueeze(1) >= lengths.unsqueeze(0)  # (T, B)
        steps_active = (lengths.shape[0] - padded.sum(1)).tolist()
        return cls(lengths=lengths.to(device), steps_active=steps_active, padded=padded.unsqueeze(2).to(device))

    @cached_property
    def reversed_time(self) -> Tensor:
        """(T, B) int64: each sequence's steps reversed within its own length (only the reverse
        direction needs it)."""
        time = torch.arange(self.padded.shape[0], device=self.padded.device).unsqueeze(1)
        return torch.where(self.padded.squeeze(2), time, self.lengths.unsqueeze(0) - 1 - time)

    def reverse_in_time(self, x: Tensor) -> Tensor:
        """(T, B, F) -> (T, B, F), each sequence's valid steps in reverse order; padding stays put."""
        index = self.reversed_time.unsqueeze(2).expand_as(x)
        return _ReverseWithinLengths.apply(x, index)

    def last_steps(self, width: int) -> Tensor:
        """(1, B, width) int64: each sequence's last valid step, the index that gathers final states."""
        return (self.lengths - 1).view(1, -1, 1).expand(1, self.lengths.shape[0], width)


class _ReverseWithinLengths(torch.autograd.Function):
    """A gather by a per-sequence reversal; the reversal is its own inverse, so the backward pass is the
    same gather (much cheaper than the generic scatter-add of indexing's backward)."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        return x.gather(0, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        return grad.gather(0, index), None


def fused_direction(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor | None,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    activation: str,
    reverse: bool,
    padding: Padding | None,
    rows: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One layer, one direction on the fast path; same contract as ``reference_direction``.

    The reverse direction is the forward recurrence over each sequence reversed within its length (with
    ``rows``, the rows are reversed: cheaper than the inputs they pick).
    Returns out: (T, B, H) and h_n: (B, H).
    """
    if reverse:
        if rows is not None:
            rows = rows.flip(0) if padding is None else rows.gather(0, padding.reversed_time)
        else:
            x = x.flip(0) if padding is None else padding.reverse_in_time(x)
    tensors = (x, h0, w_ih, w_hh, b_ih, b_hh)
    device = x.device.type
    mixed = (torch.is_autocast_enabled(device) and x.dtype == torch.float32
             and torch.get_autocast_dtype(device) == torch.bfloat16)
    with autocast_off(device):  # under autocast the precision of every GEMM is chosen here, explicitly
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
            out, h_n = FusedElmanDirection.apply(*tensors, activation, padding, rows, mixed)
        else:  # inference: skip the autograd bookkeeping
            out = recurrence_forward(*tensors, activation, padding, rows, mixed)
            h_n = final_states(out, padding)
    if reverse:
        out = out.flip(0) if padding is None else padding.reverse_in_time(out)
    return out, h_n
