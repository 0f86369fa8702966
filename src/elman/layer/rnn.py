"""``ElmanRNN``: a drop-in for ``torch.nn.RNN`` with a fused BPTT fast path and lengths without packing."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from elman.layer import fused, onnx_registration, ops
from elman.layer.dropout import dropout
from elman.layer.fused import ACTIVATIONS, check_lengths, check_rows
from elman.layer.reference import reference_direction

BACKENDS = ("fused", "reference")


class ShapeError(ValueError, RuntimeError):
    """A tensor of the wrong shape: ``nn.RNN`` raises RuntimeError here, earlier elman ValueError."""


class DtypeError(TypeError, ValueError):
    """A tensor of the wrong dtype: ``nn.RNN`` raises ValueError here, earlier elman TypeError."""


def _reference_direction(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, rows, nonlinearity, reverse, mixed):
    """``reference_direction`` with the arguments of ``elman::rnn_direction``."""
    return reference_direction(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse, lengths, rows)


def _mixed_precision(x: Tensor, batch: int, hidden: int) -> bool:
    """Whether the recurrence runs bfloat16 GEMMs on this float32 input: where autocast asks for them and, on
    the CPU, they are faster than float32 ones for this batch and width (``bfloat16_pays``); elsewhere
    autocast gets float32, never slower."""
    device = x.device.type
    asked = (device in ("cpu", "cuda") and x.dtype == torch.float32 and torch.is_autocast_enabled(device)
             and torch.get_autocast_dtype(device) == torch.bfloat16)
    return asked and (device != "cpu" or bfloat16_pays(batch, hidden))


def bfloat16_pays(batch: int, hidden: int) -> bool:
    """Whether a CPU step's GEMMs run faster in bfloat16 than in float32 for ``batch`` rows of ``hidden``
    units. Reading W_hh in half the bytes pays where it is wide and the GEMM has rows enough: from 32 rows at
    512 units, from 4 at 1024; below that the conversions and the bfloat16 GEMM's fixed cost lose against
    the float32 loops (measured in docs/measurements.md, "bfloat16 by shape")."""
    return (hidden >= 512 and batch >= 32) or (hidden >= 1024 and batch >= 4)


class ElmanRNN(nn.Module):
    r"""A multi-layer Elman RNN, interchangeable with :class:`torch.nn.RNN`.

    For each element of the input sequence, each layer computes

    .. math::
        h_t = \text{act}(x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh})

    where :math:`h_t` is the hidden state at time ``t``, :math:`x_t` the input at time ``t`` (for layers
    above the first, the previous layer's output, with dropout in training) and the same weights serve
    every step. The output of a layer is its hidden state.

    Arguments, parameter names and shapes are those of ``torch.nn.RNN``, so ``load_state_dict`` works in
    both directions. Beyond it: ``nonlinearity`` also takes ``'sigmoid'`` (Elman's original units),
    ``forward`` takes ``lengths`` for padded batches, ``backend`` picks the implementation,
    ``forward_from_table(table, ids)`` runs on embedded ids with fewer multiply-adds, and ``step(input, hx)``
    runs one time step per call with little fixed cost (streaming).

    Args:
        input_size: features per input step, ``I``.
        hidden_size: features of the hidden state, ``H``.
        num_layers: stacked recurrent layers, ``L``. Default 1.
        nonlinearity: ``'tanh'`` (default), ``'relu'`` or ``'sigmoid'``.
        bias: use ``b_ih`` and ``b_hh``. Default True.
        batch_first: input and output are ``(B, T, *)`` instead of ``(T, B, *)``. ``h`` is unaffected.
        dropout: dropout probability on the outputs of every layer but the last, in training. Default 0.
        bidirectional: add a reverse direction per layer, ``D = 2``. Default False.
        backend: ``'fused'`` (default: one ``elman::rnn_direction`` operator per layer and direction, with
            hand-written BPTT and a compiled loop on CPU; on CUDA, tanh and relu layers run as one cuDNN call, as
            ``nn.RNN`` runs them) or ``'reference'`` (the plain step loop, for testing). Under ``torch.func``
            transforms the reference loop runs, whose plain operations have forward-mode and batching rules.
        weight_dropout: in training, each forward call zeroes every element of every ``W_hh`` with this
            probability and scales the others by ``1 / (1 - p)`` (DropConnect on the recurrent weights, the
            "weight drop" of AWD-LSTM): one mask per call, shared by all its steps, so the recurrence is
            regularised without noise in the state itself. Default 0. Not an argument of ``nn.RNN``; the
            parameters are untouched, so state dicts still load both ways.

    Inputs: ``input, hx=None, *, lengths=None``
        input: ``(T, B, I)``, ``(B, T, I)`` with ``batch_first``, ``(T, I)`` unbatched, or a
            ``PackedSequence``.
        hx: ``(L * D, B, H)`` (``(L * D, H)`` unbatched) initial states; zeros if None.
        lengths: ``(B,)`` ints in ``[1, T]``, the valid steps of each padded sequence. Outputs past a
            length are 0 and ``h_n`` is each sequence's state at its last valid step (the reverse
            direction starts there), exactly as ``nn.RNN`` on the corresponding PackedSequence.

    Outputs: ``output, h_n``
        output: ``(T, B, D * H)`` (``(B, T, D * H)`` with ``batch_first``, ``(T, D * H)`` unbatched, or a
            PackedSequence for a PackedSequence input), the last layer's state at each step.
        h_n: ``(L * D, B, H)`` (``(L * D, H)`` unbatched), every layer's and direction's final state.

    Stateful / truncated BPTT: pass ``h_n.detach()`` of one chunk as ``hx`` of the next; the forward pass
    equals one long run over the concatenated chunks.

    As ``nn.RNN`` it has ``all_weights``, ``_flat_weights``, ``_flat_weights_names``, ``mode``, ``proj_size`` (0)
    and ``flatten_parameters()`` (a no-op); shape errors are ``ShapeError``, a ``RuntimeError`` as ``nn.RNN``'s.
    ``torch.compile``, ``torch.export``, ONNX export (``dynamo=True``), ``torch.jit.trace``, ``torch.func`` and
    second-order gradients work (see the README's "Compiling and exporting").
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        backend: str = "fused",
        weight_dropout: float = 0.0,
        proj_size: int = 0,
    ) -> None:
        super().__init__()
        if proj_size != 0:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        for name, value in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if nonlinearity not in ACTIVATIONS:
            raise ValueError(f"Unknown nonlinearity {nonlinearity!r}; choose one of {', '.join(ACTIVATIONS)}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout should be a number in range [0, 1], got {dropout!r}")
        if isinstance(weight_dropout, bool) or not isinstance(weight_dropout, (int, float)) \
                or not 0 <= weight_dropout < 1:
            raise ValueError(f"weight_dropout should be a number in range [0, 1), got {weight_dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                f"expects num_layers greater than 1, but got dropout={dropout} and num_layers=1",
                stacklevel=2,
            )
        if backend not in BACKENDS:
            raise ValueError(f"Unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.nonlinearity = nonlinearity
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.backend = backend
        self.weight_dropout = float(weight_dropout)
        self.proj_size = 0
        self.mode = f"RNN_{nonlinearity.upper()}"  # nn.RNN's RNN_TANH and RNN_RELU; RNN_SIGMOID is ours

        factory = {"device": device, "dtype": dtype}
        directions = 2 if bidirectional else 1
        self._all_weights: list[list[str]] = []  # nn.RNN's names: each layer's and direction's parameters
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * directions
            for suffix in ("", "_reverse")[:directions]:
                shapes = {"weight_ih": (hidden_size, layer_input), "weight_hh": (hidden_size, hidden_size)}
                if bias:
                    shapes.update(bias_ih=(hidden_size,), bias_hh=(hidden_size,))
                names = [f"{kind}_l{layer}{suffix}" for kind in shapes]
                for name, shape in zip(names, shapes.values(), strict=True):
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
                self._all_weights.append(names)
        self._flat_weights_names = [name for names in self._all_weights for name in names]
        self.reset_parameters()

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Each layer's and direction's parameters, ``[W_ih, W_hh, b_ih, b_hh]``, as ``nn.RNN.all_weights``."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    @property
    def _flat_weights(self) -> list[nn.Parameter]:
        """The parameters in ``nn.RNN``'s order, as its ``_flat_weights`` (which existing RNN code reads)."""
        return [getattr(self, name) for name in self._flat_weights_names]

    def flatten_parameters(self) -> None:
        """A no-op, as ``nn.RNN``'s is off cuDNN: the parameters stay separate tensors (on CUDA, cuDNN copies
        them per call, as it does for an ``nn.RNN`` whose weights are not flattened)."""

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        """Uniform in ``(-1/sqrt(H), 1/sqrt(H))``, as ``nn.RNN``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def direction_parameters(self, layer: int, direction: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """``(W_ih, W_hh, b_ih, b_hh)`` of one layer and direction (0 forward, 1 reverse)."""
        suffix = f"l{layer}" + ("_reverse" if direction else "")
        weights = getattr(self, f"weight_ih_{suffix}"), getattr(self, f"weight_hh_{suffix}")
        if not self.bias:
            return (*weights, None, None)
        return (*weights, getattr(self, f"bias_ih_{suffix}"), getattr(self, f"bias_hh_{suffix}"))

    def _pass_parameters(self, layer: int, direction: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """``direction_parameters`` as a forward pass uses them: in training, ``W_hh`` with ``weight_dropout``."""
        w_ih, w_hh, b_ih, b_hh = self.direction_parameters(layer, direction)
        if self.training and self.weight_dropout > 0:
            w_hh = dropout(w_hh, self.weight_dropout)
        return w_ih, w_hh, b_ih, b_hh

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        defaults = {"num_layers": 1, "nonlinearity": "tanh", "bias": True, "batch_first": False,
                    "dropout": 0.0, "bidirectional": False, "backend": "fused", "weight_dropout": 0.0}
        for name, default in defaults.items():
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)!r}"
        return text

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: Tensor | None = None,
        *,
        lengths: Tensor | Sequence[int] | None = None,
    ) -> tuple[Tensor | PackedSequence, Tensor]:
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths cannot be given with a PackedSequence input: it carries its own")
            return self._forward_packed(input, hx)
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a Tensor or a PackedSequence, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"ElmanRNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
        unbatched = input.dim() == 2
        if unbatched:
            if lengths is not None:
                raise ValueError("lengths applies to batched input only; an unbatched input is one sequence")
            if hx is not None and hx.dim() != 2:
                raise ShapeError(f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor")
            input = input.unsqueeze(1)
            hx = None if hx is None else hx.unsqueeze(1)
        elif self.batch_first:
            input = input.transpose(0, 1)
        elif hx is not None and hx.dim() != 3:
            raise ShapeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")

        output, h_n = self._forward_time_major(input, hx, lengths)

        if unbatched:
            return output.squeeze(1), h_n.squeeze(1)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, h_n

    def step(self, input: Tensor, hx: Tensor | None = None, *, out: Tensor | None = None) -> Tensor:
        """One time step for streaming, one call per step: ``input`` ``(B, I)``, ``hx`` ``(L, B, H)`` (None:
        zeros) -> the new state ``(L, B, H)``, whose last layer is the step's output. The same as
        ``forward(input[None], hx)[1]`` (batch-first or not), with less fixed cost per call: a unidirectional
        float32/float64 stack on the CPU, with no gradient asked for, runs every layer in one compiled call
        into ``out`` (a preallocated ``(L, B, H)`` buffer, apart from ``hx``; reusing two buffers in turn saves
        an allocation per step). Anything else runs ``forward``."""
        if self._step_may_compile(input):
            state, into = self._step_states(input, hx, out)
            if fused.compiled_step(input, state, into, *self.step_operands()):
                return into
        state = self.forward(input.unsqueeze(1 if self.batch_first else 0), hx)[1]
        return state if out is None else out.copy_(state)

    def step_operands(self) -> tuple[list[Tensor], bool, int]:
        """What the compiled step reads besides input and states: the parameters in nn.RNN's order (each
        layer's W_ih, W_hh, and with ``bias`` b_ih, b_hh), ``bias``, and the activation's code."""
        weights = [self._parameters[name] for name in self._flat_weights_names]  # getattr costs ~1 us each
        return weights, self.bias, ACTIVATIONS.index(self.nonlinearity)

    def step_is_compiled(self, input: Tensor, hx: Tensor | None, out: Tensor | None = None) -> bool:
        """Whether ``step(input, hx, out=out)`` takes its compiled call: what that call computes is this
        module's forward."""
        if not self._step_may_compile(input):
            return False
        return fused.compiled_step_fits(input, *self._step_states(input, hx, out), *self.step_operands()[:2])

    def _step_states(self, input: Tensor, hx: Tensor | None, out: Tensor | None) -> tuple[Tensor, Tensor]:
        """What the compiled step reads and writes: ``hx`` (None: zeros) and ``out`` (None: a new buffer)."""
        state = input.new_zeros(self.num_layers, input.shape[0], self.hidden_size) if hx is None else hx
        return state, torch.empty_like(state) if out is None else out

    def _step_may_compile(self, input: Tensor) -> bool:
        """What the compiled step cannot see for itself (it checks its tensors, ``compiled_step_fits``): this
        module's settings and the modes around the call. (Every step asks, cheapest first: at batch 1 a
        step's checks once cost as much as its arithmetic.)"""
        if (fused.compiled_step is None or self.bidirectional or self.backend == "reference"
                or (self.training and (self.dropout > 0 or self.weight_dropout > 0)) or input.dim() != 2):
            return False
        # a compiled call is invisible to tracing, dispatch modes and torch.func's transforms
        if ops.intercepted(input) or torch._C._are_functorch_transforms_active():
            return False
        # under autocast forward's GEMMs may read bfloat16, the step's never do (the shape asked first: cheaper)
        batch = input.shape[0]
        return not (bfloat16_pays(batch, self.hidden_size) and _mixed_precision(input, batch, self.hidden_size))

    def forward_from_table(
        self,
        table: Tensor,
        ids: Tensor,
        hx: Tensor | None = None,
        *,
        lengths: Tensor | Sequence[int] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``forward(table[ids], hx, lengths=lengths)``, for inputs that are rows of a table (an embedding's
        weight and character ids), with fewer multiply-adds where the table has fewer rows than the batch
        has inputs (``V < T * B``): the first layer then projects each of the table's rows once,
        ``table W_ih^T + b_ih + b_hh`` (V, H), and gathers its inputs' projections, instead of projecting
        all ``T * B`` inputs. The same outputs and gradients (``table``'s too). On the surname classifier
        of the book's configuration (V 88, I 100, H 64, batches of 64 names) a training step takes 8% less.

        Args:
            table: ``(V, I)`` input vectors.
            ids: ``(T, B)`` (``(B, T)`` with ``batch_first``) integer indices into ``table``.
            hx, lengths: as in ``forward``.
        Returns ``output, h_n`` as ``forward``.
        """
        if not isinstance(table, Tensor) or table.dim() != 2:
            raise ValueError(f"table must be a 2-D tensor (rows, input_size), got {getattr(table, 'shape', table)!r}")
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point() or ids.dtype == torch.bool:
            raise ValueError("ids must be a 2-D tensor of integer indices into the table, shaped (T, B) "
                             f"((B, T) with batch_first), got {getattr(ids, 'shape', ids)!r}")
        ids = (ids.t() if self.batch_first else ids).to(torch.int64)
        output, h_n = self._forward_time_major(table, hx, lengths, ids=ids)
        return (output.transpose(0, 1) if self.batch_first else output), h_n

    def _forward_packed(self, packed: PackedSequence, hx: Tensor | None) -> tuple[PackedSequence, Tensor]:
        padded, lengths = pad_packed_sequence(packed)  # time-major, lengths in the caller's batch order
        output, h_n = self._forward_time_major(padded, hx, lengths)
        if packed.sorted_indices is not None:
            output = output[:, packed.sorted_indices.to(output.device)]
            lengths = lengths[packed.sorted_indices.cpu()]
        data = pack_padded_sequence(output, lengths).data
        return PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices), h_n

    def _check_input(self, input: Tensor, hx: Tensor | None, steps: int, batch: int) -> None:
        if not input.is_floating_point():
            raise DtypeError(f"input must be a floating-point tensor, got {input.dtype}")
        weight = self.weight_ih_l0
        if input.dtype != weight.dtype:
            raise DtypeError(
                f"input must have the type {weight.dtype}, got type {input.dtype} "
                f"(convert the input, or the layer with .to({input.dtype}))"
            )
        if input.device != weight.device:
            raise ValueError(f"input is on {input.device} but the layer's parameters are on {weight.device}")
        if input.shape[-1] != self.input_size:
            raise ShapeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {input.shape[-1]}"
            )
        if steps == 0:
            raise ShapeError("input must have at least one time step, got 0")
        if hx is not None:
            expected = (self.num_layers * self.num_directions, batch, self.hidden_size)
            if tuple(hx.shape) != expected:
                raise ShapeError(f"Expected hidden size {expected}, got {list(hx.shape)}")
            if hx.dtype != input.dtype or hx.device != input.device:
                raise DtypeError(
                    f"hx must match the input's dtype and device ({input.dtype}, {input.device}), "
                    f"got ({hx.dtype}, {hx.device})"
                )

    def _check_lengths(self, lengths: Tensor | Sequence[int], batch: int) -> Tensor:
        """``lengths`` as a (B,) int64 tensor. Their values are checked where they are read: in the fused
        kernels, which run eagerly also under ``torch.compile`` and ``torch.export``."""
        lengths = torch.as_tensor(lengths)
        if lengths.dim() != 1 or lengths.shape[0] != batch:
            raise ShapeError(
                f"lengths must be 1-D with one entry per sequence ({batch}), got shape {list(lengths.shape)}"
            )
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise DtypeError(f"lengths must hold integers, got {lengths.dtype}")
        return lengths.to(torch.int64)

    def _forward_time_major(
        self, x: Tensor, hx: Tensor | None, lengths: Tensor | Sequence[int] | None, ids: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """x: (T, B, I), or a table (V, I) whose rows ``ids`` (T, B) are the input; hx: (L * D, B, H) or None
        -> output (T, B, D * H), h_n (L * D, B, H)."""
        steps, batch = (x.shape[0], x.shape[1]) if ids is None else ids.shape
        self._check_input(x, hx, steps, batch)
        if lengths is not None:
            lengths = self._check_lengths(lengths, batch)
        if hx is None:
            hx = x.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
        if self._runs_on_cudnn(x):
            if ids is not None:  # cuDNN reads the inputs themselves
                x = nn.functional.embedding(ids, x)
            return self._cudnn_stack(x, hx, lengths)
        return self._direction_by_direction(x, hx, lengths, ids)

    def _direction_by_direction(self, x: Tensor, hx: Tensor, lengths: Tensor | None, ids: Tensor | None
                                ) -> tuple[Tensor, Tensor]:
        """The stack, one layer and direction at a time. With ``ids`` (T, B), ``x`` is a table (V, I) and the
        input is its rows ``ids``."""
        run_direction = self._direction_function(x, ids)
        if torch.jit.is_tracing():  # perhaps for the TorchScript-based ONNX exporter, which cannot translate us
            onnx_registration.refuse_legacy_export()
        if run_direction is _reference_direction and not torch.compiler.is_compiling():
            if lengths is not None:  # the fused kernels check them where they read them
                lengths = check_lengths(lengths, ids.shape[0] if ids is not None else x.shape[0], hx.shape[1])
            if ids is not None:
                check_rows(ids, x.shape[0])
        mixed = _mixed_precision(x, hx.shape[1], self.hidden_size)
        final_states = []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                w_ih, w_hh, b_ih, b_hh = self._pass_parameters(layer, direction)
                rows = ids if layer == 0 else None
                out, h_last = run_direction(layer_input, hx[layer * self.num_directions + direction], w_ih, w_hh,
                                            b_ih, b_hh, lengths, rows, self.nonlinearity, bool(direction), mixed)
                outputs.append(out)
                final_states.append(h_last)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = dropout(layer_input, self.dropout)
        return layer_input, final_states[0].unsqueeze(0) if len(final_states) == 1 else torch.stack(final_states)

    def _direction_function(self, x: Tensor, ids: Tensor | None):
        """The operator ``elman::rnn_direction``, or the reference loop: asked for, for an empty batch (which
        nn.RNN accepts; the fused loops never see one), and under ``torch.func`` transforms, whose forward-mode
        derivatives and batching rules the reference loop's plain operations have and the operator has not."""
        empty = (x if ids is None else ids).shape[1] == 0
        if self.backend == "reference" or empty or torch._C._are_functorch_transforms_active():
            return _reference_direction
        return ops.rnn_direction

    def _runs_on_cudnn(self, x: Tensor) -> bool:
        # A step loop launches a few kernels per step; on a GPU, cuDNN's whole-sequence kernels are 3-9x
        # faster (H200, training step, T 20-100, H 64-512). cuDNN has no sigmoid units.
        return x.is_cuda and self.backend == "fused" and self.nonlinearity != "sigmoid"

    def _cudnn_stack(self, x: Tensor, hx: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        """The whole stack in one call of the kernel behind ``nn.RNN`` (cuDNN on CUDA): ``x`` (T, B, I), ``hx``
        (L * D, B, H), ``lengths`` (B,) in any order or None."""
        weights = [w for layer in range(self.num_layers) for direction in range(self.num_directions)
                   for w in self._pass_parameters(layer, direction) if w is not None]
        rnn = torch._VF.rnn_tanh if self.nonlinearity == "tanh" else torch._VF.rnn_relu
        arguments = (self.bias, self.num_layers, self.dropout, self.training, self.bidirectional)
        steps = x.shape[0]
        if lengths is not None:
            lengths = check_lengths(lengths, steps, x.shape[1])
        with warnings.catch_warnings():  # our weights are separate tensors; cuDNN copies them per call
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
            if lengths is None or bool((lengths == steps).all()):
                return tuple(rnn(x, hx, weights, *arguments, False))
            packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
            data, h_n = rnn(packed.data, packed.batch_sizes, hx.index_select(1, packed.sorted_indices), weights,
                            *arguments)
        packed_output = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        output, _ = pad_packed_sequence(packed_output, total_length=steps)
        return output, h_n.index_select(1, packed.unsorted_indices)
