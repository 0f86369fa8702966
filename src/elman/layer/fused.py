"""The fast path's kernels: one direction of one layer, forward and hand-written BPTT.

For a batch of ``B`` sequences of ``T`` steps (time-major), inputs ``x`` of shape ``(T, B, I)`` and a
start state ``h0`` of shape ``(B, H)``, the layer computes

    z_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh        z_t, h_t: (B, H)
    h_t = act(z_t)                                          h_{-1} = h0

and returns all ``h_t`` as ``out`` of shape ``(T, B, H)``.

Forward: the input projection ``x_t W_ih^T + b`` for all steps is one GEMM written straight into
``out``; then each step adds ``h_{t-1} W_hh^T`` in place (one GEMM) and applies ``act`` in place.
With ``rows`` ``(T, B)``, ``x`` is a table ``(V, I)`` (an embedding's weight) and step t of sequence b reads
row ``rows[t, b]``; where the table has fewer rows than the batch has inputs, each row is projected once
and the projections are gathered into ``out`` (``ElmanRNN.forward_from_table``).

Backward (BPTT): with ``g_t = dL/dh_t`` from the outputs,

    dz_t     = (g_t + dz_{t+1} W_hh) * act'(z_t)            one GEMM per step, in place
    dL/dh0   = dz_0 W_hh
    dL/dW_hh = sum_t dz_t^T h_{t-1}     dL/dW_ih = sum_t dz_t^T x_t
    dL/db    = sum_t dz_t               dL/dx_t  = dz_t W_ih

where the last four are each one GEMM (or one reduction) over all steps after the loop; with a projected
table, row v's projection gets the sum of the ``dz_t`` of the steps that read it (one index_add) and the
GEMMs run over the table's rows. ``act'`` is computed from the saved outputs (``1 - h^2`` for tanh,
``h (1 - h)`` for sigmoid, ``h > 0`` for relu).

Variable lengths without packing: inside a kernel the batch is sorted by length, longest first
(``Layout``), so that at step ``t`` the sequences still running are the leading ``batch_sizes[t]`` rows.
Each step works on that prefix of rows (a contiguous view), the rows that have ended are left alone, and
the padded positions of ``out`` are zeroed once after the loop. The reverse direction runs the same loop
over each sequence reversed within its own length. Nothing is packed; a batch that is already sorted (or
has no lengths) is not copied.

The two sequential loops exist twice: here in Python (any device) and in ``_loops.cpp`` (CPU, compiled).
They are the same few lines; the compiled one is used for CPU tensors when it was built, because on small
problems the interpreter's per-step cost is most of the run time.

Mixed precision (``mixed``, chosen by the caller under ``torch.autocast(device, dtype=torch.bfloat16)``):
every GEMM above reads bfloat16 operands (float32 accumulation inside, a bfloat16 product out), while the
states ``h_t``, the ``dz_t`` and every gradient stay float32. The outputs are float32.

These functions are the kernels of the ``elman::`` operators (``ops.py``); call them through the operators.
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from elman.layer.build import load_compiled_loops
from elman.threads import torch_threads

ACTIVATIONS = ("tanh", "relu", "sigmoid")

# What this code calls in the compiled module; a module built from an older _loops.cpp may lack some.
COMPILED_FUNCTIONS = ("forward_loop", "backward_loop", "forward_loop_bf16", "backward_loop_bf16", "dropout_apply")


def _compiled_module():
    """The compiled loops (``_loops.cpp``), or None where they cannot be had. A build older than this code
    is set aside with a warning that says how to rebuild it, and the Python loops run meanwhile."""
    loops = load_compiled_loops()
    if loops is None:
        return None
    missing = [name for name in COMPILED_FUNCTIONS if not hasattr(loops, name)]
    if missing:
        warnings.warn(f"{loops.__file__} was built from an older _loops.cpp (it has no {', '.join(missing)}); "
                      "the slower Python loops run instead until it is rebuilt: pip install --no-build-isolation . "
                      "(or, in a source checkout, python setup.py build_ext --inplace)", RuntimeWarning, stacklevel=2)
        return None
    return loops


compiled_loops = _compiled_module()
# ElmanRNN.step's one call, whether it runs on given operands, and TextGenerator.generate's loop: from a build
# that has step_fits (older builds have none of them, or take other arguments)
_streams = hasattr(compiled_loops, "step_fits")
compiled_step = compiled_loops.step if _streams else None
compiled_step_fits = compiled_loops.step_fits if _streams else None
compiled_generate = compiled_loops.generate if _streams else None
compiled_output_buffer = getattr(compiled_loops, "output_buffer", None)

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


def forward_loop(out: Tensor, h0: Tensor, w_hh: Tensor, batch_sizes: list[int], activation: str) -> None:
    """In place: ``out[t]`` holds the input projection on entry and ``h_t`` on return."""
    w_hh_t = w_hh.t()
    h = h0
    for t, n in enumerate(batch_sizes):
        step = out[t, :n]
        accumulate_product(step, h[:n], w_hh_t)
        activate_(step, activation)
        h = step


def backward_loop(dz: Tensor, slope: Tensor, w_hh: Tensor, batch_sizes: list[int]) -> None:
    """In place: ``dz[t]`` holds dL/dh_t from the outputs on entry and dL/dz_t on return."""
    for t in range(len(batch_sizes) - 1, -1, -1):
        n = batch_sizes[t]
        step = dz[t, :n]
        step.mul_(slope[t, :n])
        if t > 0:
            accumulate_product(dz[t - 1, :n], step, w_hh)


def matmul(a: Tensor, b: Tensor, mixed: bool) -> Tensor:
    """``a @ b``; with ``mixed``, computed from bfloat16 copies and returned as float32."""
    if not mixed:
        return torch.mm(a, b)
    return bfloat16_product(a, b).float()


def bfloat16_product(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` from bfloat16 copies, in bfloat16."""
    return torch.mm(a.to(torch.bfloat16), b.to(torch.bfloat16))


def output_buffer(rows: int, hidden: int, like: Tensor) -> Tensor:
    """An uninitialised (rows, hidden) buffer of ``like``'s dtype and device for a forward pass's output. Float32
    on the CPU, from the compiled loops' pool (``OutputPool`` in _loops.cpp): the memory of an output that the
    caller has dropped serves the next call of the same size, already mapped."""
    if compiled_output_buffer is not None and like.device.type == "cpu" and like.dtype == torch.float32:
        return compiled_output_buffer(rows, hidden)
    return like.new_empty(rows, hidden)


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


def run_loop(direction: str, buffer: Tensor, states: Tensor, w_hh: Tensor, batch_sizes: list[int],
             activation: str, mixed: bool) -> None:
    """One of the two sequential loops, in place on ``buffer`` (T, B, H), compiled where it can be.

    "forward": ``buffer`` holds the input projections on entry and the h_t on return; ``states`` is h0 (B, H).
    "backward": ``buffer`` holds dL/dh_t on entry and dL/dz_t on return; ``states`` holds the h_t (T, B, H).
    """
    if mixed:
        w_hh = w_hh.to(torch.bfloat16).contiguous()
    with _threads_for(buffer.shape[1], buffer.shape[2], buffer.device):
        if _use_compiled(buffer, states, mixed=mixed):
            name = f"{direction}_loop{'_bf16' if mixed else ''}"
            getattr(compiled_loops, name)(buffer, states, w_hh, batch_sizes, ACTIVATIONS.index(activation))
        elif direction == "forward":
            forward_loop(buffer, states, w_hh, batch_sizes, activation)
        else:  # act'(z_t) computed from h_t; the compiled loop does it inside
            backward_loop(buffer, activation_slope(states, activation), w_hh, batch_sizes)


@dataclass(frozen=True)
class Layout:
    """How a kernel sees the batch: sorted by length, longest first, and for the reverse direction each
    sequence reversed within its own length. ``to_kernel`` and ``from_kernel`` move (T, B, *) tensors
    between the caller's order and this one; ``sort`` and ``unsort`` move (B, *) ones.

    Built from the caller's ``lengths`` (B,) integers (any order, values in [1, T], as ``check_lengths``
    ensures; None: all T).
    """

    batch_sizes: list[int]  # T ints: sequences still running at step t (kernel order)
    order: Tensor | None  # (B,) the caller's index of each kernel row; None when already sorted
    restore: Tensor | None  # (B,) the inverse permutation
    lengths: Tensor | None  # (B,) sorted, on the device; None when every sequence runs all T steps
    padded: Tensor | None  # (T, B, 1) bool, kernel order
    # (T * B,) reversal within lengths, when reversing padded sequences: the row of (T * B, *) that step t of
    # sequence b reads; rows copied whole by index_select, a ninth of the time gather takes on (T, B, H)
    time_index: Tensor | None
    reverse: bool

    @classmethod
    def build(cls, lengths: Tensor | None, steps: int, batch: int, reverse: bool, device: torch.device) -> Layout:
        if lengths is not None:
            lengths = lengths.cpu().to(torch.int64)
            if batch == 0 or bool((lengths == steps).all()):
                lengths = None
        if lengths is None:
            return cls([batch] * steps, None, None, None, None, None, reverse)
        order = restore = None
        if bool((lengths[1:] > lengths[:-1]).any()):
            order = torch.argsort(lengths, descending=True, stable=True)
            lengths = lengths[order]
            restore = torch.argsort(order).to(device)
            order = order.to(device)
        padded = torch.arange(steps).unsqueeze(1) >= lengths.unsqueeze(0)  # (T, B)
        batch_sizes = (batch - padded.sum(1)).tolist()
        lengths, padded = lengths.to(device), padded.to(device)
        time_index = None
        if reverse:
            time = torch.arange(steps, device=device).unsqueeze(1)
            time_index = torch.where(padded, time, lengths.unsqueeze(0) - 1 - time) * batch
            time_index = (time_index + torch.arange(batch, device=device)).reshape(-1)
        return cls(batch_sizes, order, restore, lengths, padded.unsqueeze(2), time_index, reverse)

    def sort(self, x: Tensor) -> Tensor:
        return x if self.order is None else x.index_select(0, self.order)

    def unsort(self, x: Tensor) -> Tensor:
        return x if self.restore is None else x.index_select(0, self.restore)

    def _reverse_time(self, x: Tensor) -> Tensor:
        if not self.reverse:
            return x
        if self.time_index is None:
            return x.flip(0)
        return x.reshape(x.shape[0] * x.shape[1], -1).index_select(0, self.time_index).view(x.shape)

    def to_kernel(self, x: Tensor) -> Tensor:
        """(T, B, *) in the caller's order -> the kernel's (the same tensor when nothing moves)."""
        if self.order is not None:
            x = x.index_select(1, self.order)
        return self._reverse_time(x)

    def from_kernel(self, x: Tensor) -> Tensor:
        """The inverse of ``to_kernel`` (the reversal within lengths is its own inverse)."""
        x = self._reverse_time(x)
        return x if self.restore is None else x.index_select(1, self.restore)

    def final_states(self, out: Tensor) -> Tensor:
        """(T, B, H) kernel order -> (B, H) in the caller's order: each sequence's state after its last valid
        step in walking order; never a view of ``out``."""
        if self.lengths is None:
            return out[-1].clone()
        last = (self.lengths - 1).view(1, -1, 1).expand(1, out.shape[1], out.shape[2])
        return self.unsort(out.gather(0, last).squeeze(0))

    def add_final_gradient(self, dz: Tensor, grad_h_n: Tensor) -> None:
        """``dz`` (T, B, H, kernel order) += the gradient of ``final_states`` (B, H, caller's order)."""
        grad_h_n = self.sort(grad_h_n)
        if self.lengths is None:
            dz[-1] += grad_h_n
        else:
            last = (self.lengths - 1).view(1, -1, 1).expand(1, dz.shape[1], dz.shape[2])
            dz.scatter_add_(0, last, grad_h_n.unsqueeze(0))


def check_lengths(lengths: Tensor, steps: int, batch: int) -> Tensor:
    """``lengths`` as (B,) int64 on the CPU, refused by name where it cannot be a batch's lengths."""
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"lengths must be 1-D with one entry per sequence ({batch}), got shape {list(lengths.shape)}")
    lengths = lengths.cpu().to(torch.int64)
    if batch:
        low, high = int(lengths.min()), int(lengths.max())
        if low < 1 or high > steps:
            raise ValueError(
                f"lengths must lie in [1, {steps}] (the number of time steps), got values in [{low}, {high}]")
    return lengths


def check_rows(rows: Tensor, table_rows: int) -> None:
    if rows.numel():
        low, high = (int(v) for v in torch.aminmax(rows))
        if low < 0 or high >= table_rows:
            raise ValueError(f"ids must lie in [0, {table_rows}) (the table's rows), got values in [{low}, {high}]")


def _projects_table(rows: Tensor | None, table: Tensor) -> bool:
    """With ``rows``: project the table's rows and gather (fewer multiply-adds), or gather the inputs and
    project them (as many rows as inputs: no dearer, and less to index)."""
    return rows is not None and rows.numel() > table.shape[0]


def _inputs(x: Tensor, rows: Tensor | None, layout: Layout, projects_table: bool) -> Tensor:
    """What the input GEMM reads: the table itself, or the (T, B, I) inputs in kernel order."""
    if projects_table:
        return x
    if rows is not None:
        return layout.to_kernel(x[rows])
    return layout.to_kernel(x)


def rnn_direction(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None,
                  lengths: Tensor | None, rows: Tensor | None, activation: str, reverse: bool, mixed: bool,
                  ) -> tuple[Tensor, Tensor]:
    """Kernel of ``elman::rnn_direction`` (see ``ops.py`` for the arguments): out (T, B, H), h_n (B, H)."""
    with autocast_off(x.device.type):  # the precision of every GEMM is chosen here, by ``mixed``
        return _rnn_direction(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, rows, activation, reverse, mixed)


def _rnn_direction(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, rows, activation, reverse, mixed):
    T, B = rows.shape if rows is not None else x.shape[:2]
    H = w_hh.shape[0]
    if rows is not None:
        check_rows(rows, x.shape[0])
    if lengths is not None:  # once, here: the backward pass reads the lengths this pass accepted
        lengths = check_lengths(lengths, T, B)
    layout = Layout.build(lengths, T, B, reverse, x.device)
    bias = None if b_ih is None else b_ih + b_hh
    projects_table = _projects_table(rows, x)
    inputs = _inputs(x, rows, layout, projects_table)
    flat = inputs.reshape(-1, inputs.shape[-1])
    out = output_buffer(T * B, H, x)
    if projects_table:  # the table is small: projected in its own precision, then its rows gathered
        projected = torch.mm(x, w_ih.t()) if bias is None else torch.addmm(bias, x, w_ih.t())
        torch.index_select(projected, 0, layout.to_kernel(rows).reshape(-1), out=out)
    elif mixed:
        out.copy_(bfloat16_product(flat, w_ih.t()))  # converted to float32 into out, not into a new tensor
        if bias is not None:
            out += bias
    elif bias is None:
        torch.mm(flat, w_ih.t(), out=out)
    else:
        torch.addmm(bias, flat, w_ih.t(), out=out)
    out = out.view(T, B, H)
    run_loop("forward", out, layout.sort(h0).contiguous(), w_hh, layout.batch_sizes, activation, mixed)
    if layout.padded is not None:
        out.masked_fill_(layout.padded, 0)
    return layout.from_kernel(out), layout.final_states(out)


def rnn_direction_backward(
    grad_out: Tensor | None, grad_h_n: Tensor | None, x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor,
    lengths: Tensor | None, rows: Tensor | None, out: Tensor, activation: str, reverse: bool, mixed: bool,
    output_mask: list[bool],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Kernel of ``elman::rnn_direction_backward``: the gradients of x, h0, W_ih, W_hh and of each bias, where
    ``output_mask`` asks for them (an empty tensor where not). ``out`` is the forward pass's output."""
    with autocast_off(out.device.type):
        return _rnn_direction_backward(grad_out, grad_h_n, x, h0, w_ih, w_hh, lengths, rows, out, activation,
                                       reverse, mixed, output_mask)


def _rnn_direction_backward(grad_out, grad_h_n, x, h0, w_ih, w_hh, lengths, rows, out, activation, reverse, mixed,
                            output_mask):
    T, B, H = out.shape
    layout = Layout.build(lengths, T, B, reverse, out.device)
    out = layout.to_kernel(out).contiguous()
    # dz starts as dL/dh_t, a contiguous buffer the loop may overwrite; padded outputs are constants
    if grad_out is None:
        dz = torch.zeros_like(out)
    else:
        dz = layout.to_kernel(grad_out)
        dz = dz.clone(memory_format=torch.contiguous_format) if dz is grad_out else dz.contiguous()
        if layout.padded is not None:
            dz.masked_fill_(layout.padded, 0)
    if grad_h_n is not None:
        layout.add_final_gradient(dz, grad_h_n)
    run_loop("backward", dz, out, w_hh, layout.batch_sizes, activation, mixed)

    need_x, need_h0, need_w_ih, need_w_hh, need_b = output_mask
    h0 = layout.sort(h0)
    dz_steps = dz.view(T * B, H)
    dz_steps_gemm = dz_steps.to(torch.bfloat16) if mixed else dz_steps  # converted once for the GEMMs below
    projects_table = _projects_table(rows, x)
    if projects_table:  # W_ih's GEMMs run over the table's rows: dz summed into the rows each step read
        dz_rows = dz_steps.new_zeros(x.shape[0], H).index_add_(0, layout.to_kernel(rows).reshape(-1), dz_steps)
        dz_rows_gemm, mixed_rows = dz_rows, False  # the table is projected in its own precision
    else:
        dz_rows, dz_rows_gemm, mixed_rows = dz_steps, dz_steps_gemm, mixed
    nothing = out.new_empty(0)
    grad_h0 = layout.unsort(torch.mm(dz[0], w_hh)) if need_h0 else nothing
    grad_w_ih = nothing
    if need_w_ih:
        inputs = _inputs(x, rows, layout, projects_table)
        grad_w_ih = matmul(dz_rows_gemm.t(), inputs.reshape(-1, inputs.shape[-1]), mixed_rows)
    grad_w_hh = nothing
    if need_w_hh:
        grad_w_hh = torch.mm(dz[0].t(), h0)
        if T > 1:
            grad_w_hh += matmul(dz_steps_gemm[B:].t(), out[:-1].reshape(-1, H), mixed)
    grad_b = dz_rows.sum(0) if need_b else nothing
    grad_x = nothing
    if need_x:
        grad_inputs = matmul(dz_rows_gemm, w_ih, mixed_rows)
        if projects_table:
            grad_x = grad_inputs
        elif rows is None:
            grad_x = layout.from_kernel(grad_inputs.view(T, B, -1))
        else:  # the gradient of x[rows]: summed into the rows each step read
            grad_inputs = layout.from_kernel(grad_inputs.view(T, B, -1)).reshape(T * B, -1)
            grad_x = grad_inputs.new_zeros(x.shape).index_add_(0, rows.reshape(-1), grad_inputs)
    return grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b
