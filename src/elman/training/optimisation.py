"""The optimisation step: AdamW with gradient clipping on the trained parameters as one buffer, under the
run's precision and threads, over one or several processes (see ``elman.training.processes``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from elman.memory import keep_freed_memory
from elman.threads import torch_threads
from elman.training.precision import autocast
from elman.training.processes import Processes
from elman.training.resume import optimizer_tensors, prefixed, restore_optimizer, unprefixed

# below this many trained parameters a step's operations are too small to share between threads
# (docs/measurements.md, "Threads")
SMALL_MODEL_PARAMETERS = 100_000


def flatten_parameters(parameters: list[nn.Parameter]) -> tuple[Tensor, Tensor]:
    """Make ``parameters`` views of one new buffer and their gradients views of another, and return the two
    buffers (values, gradients), 1-D. Backward then accumulates every gradient into the one buffer, and the
    update reads the two as single tensors: on the CPU torch's multi-tensor kernels (norms, AdamW) loop over
    the tensors, a few microseconds each."""
    values = torch.cat([p.detach().reshape(-1) for p in parameters])
    gradients = torch.zeros_like(values)
    offset = 0
    for parameter in parameters:
        size = parameter.numel()
        parameter.data = values[offset : offset + size].view_as(parameter)
        parameter.grad = gradients[offset : offset + size].view_as(parameter)
        offset += size
    return values, gradients


def matrix_mask(model: nn.Module, parameters: list[nn.Parameter], spared: Sequence[Tensor] = ()) -> Tensor:
    """1 for every element of a weight matrix among ``parameters``, 0 for biases, embedding tables and the
    ``spared`` tensors, laid out as ``flatten_parameters`` lays out their values (1-D)."""
    undecayed = {id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)}
    undecayed |= {id(tensor) for tensor in spared}
    return torch.cat([torch.full((p.numel(),), float(p.dim() >= 2 and id(p) not in undecayed), dtype=p.dtype,
                                 device=p.device) for p in parameters])


class Optimisation:
    """The model (DDP-wrapped when there are several processes), AdamW, and one training step.

    The trained parameters (those that require gradients) become views of one buffer (see
    ``flatten_parameters``), their gradients views of another; every one of them is updated at every step
    (a parameter the step did not use has gradient zero). ``threads``: intra-op threads for the steps; None
    chooses one thread for a small model (see ``SMALL_MODEL_PARAMETERS``) and leaves the setting as it is
    otherwise."""

    def __init__(self, model: nn.Module, learning_rate: float, weight_decay: float, clip_norm: float,
                 precision: str, processes: Processes, threads: int | None = None, decay_all: bool = True,
                 spared_from_decay: Sequence[Tensor] = ()):
        keep_freed_memory()  # each step's large buffers are then reused, not mapped and faulted in anew
        self.module = model
        self.parameters = [p for p in model.parameters() if p.requires_grad]  # frozen parts stay as they are
        if len({(p.device, p.dtype) for p in self.parameters}) != 1:
            raise ValueError("the trained parameters must exist and share one device and dtype (one buffer)")
        # decay_all=False: AdamW's decoupled decay shrinks the weight matrices only, not biases, embedding tables
        # or the matrices ``spared_from_decay`` names
        self.decay_rates = (None if decay_all
                            else matrix_mask(model, self.parameters, spared_from_decay) * weight_decay)
        self.values, self.gradients = flatten_parameters(self.parameters)
        self.model = nn.parallel.DistributedDataParallel(model) if processes.world > 1 else model
        # torch's AdamW holds the state (and saves and restores it); ``_clip_and_update`` takes its steps
        self.optimizer = torch.optim.AdamW([self.values], lr=learning_rate, weight_decay=weight_decay, fused=True)
        self.clip_norm, self.precision, self.processes = clip_norm, precision, processes
        self.threads = threads or (1 if self.values.numel() < SMALL_MODEL_PARAMETERS else None)

    def step(self, learning_rate: float, loss_sum: Callable[..., tuple[Tensor, float, Any]],
             *inputs: Any) -> tuple[float, float, Any]:
        """One update. ``loss_sum(model, *inputs)`` runs the forward pass on this process's rows and returns
        (summed loss, what the mean divides by: the number of scored items, or their summed class weights,
        anything else the caller wants back from the forward pass). Returns the global batch's (summed loss,
        divisor) and that third value."""
        if not self.model.training:  # train() walks every submodule: 0.1 ms a step for a small model
            self.model.train()
        with torch_threads(self.threads):
            with autocast(self.precision, self.values.device):
                total, count, extra = loss_sum(self.model, *inputs)
            count = float(self.processes.total(torch.tensor([float(count)]))) if self.processes.world > 1 \
                else float(count)
            self.gradients.zero_()
            (total * (self.processes.world / max(count, 1.0))).backward()
            self._clip_and_update(learning_rate)
        return float(self.processes.total(total.detach().float().reshape(1))), count, extra

    def _clip_and_update(self, learning_rate: float) -> None:
        """What ``clip_grad_norm_(parameters, clip_norm)`` and ``optimizer.step()`` do, in a few kernel calls
        on the two buffers:

            scale = max(1, (||g|| + 1e-6) / clip_norm)     ||g||: the norm of all gradients as one vector
            AdamW step on g / scale                          (torch's fused kernel, its ``grad_scale``)

        The two torch calls spent ~0.45 ms of Python per step on the per-tensor lists, a sixth of a small
        classifier's step (batch 64, hidden 64)."""
        norm = torch.linalg.vector_norm(self.gradients)
        scale = ((norm + 1e-6) / self.clip_norm).clamp_(min=1.0).float()  # the kernel reads float32
        state = self.optimizer.state[self.values]
        if not state:  # as torch's AdamW begins a parameter's state (so that its state_dict is the same)
            state["step"] = torch.zeros((), dtype=torch.float32, device=self.values.device)
            state["exp_avg"] = torch.zeros_like(self.values)
            state["exp_avg_sq"] = torch.zeros_like(self.values)
        group = self.optimizer.param_groups[0]
        group["lr"] = learning_rate
        state["step"] += 1
        beta1, beta2 = group["betas"]
        if self.decay_rates is not None:  # the decay AdamW applies first, element by element
            self.values.addcmul_(self.values, self.decay_rates, value=-learning_rate)
        torch._fused_adamw_([self.values], [self.gradients], [state["exp_avg"]], [state["exp_avg_sq"]], [],
                            [state["step"]], lr=learning_rate, beta1=beta1, beta2=beta2,
                            weight_decay=group["weight_decay"] if self.decay_rates is None else 0.0,
                            eps=group["eps"], amsgrad=False, maximize=False, grad_scale=scale, found_inf=None)

    def restart(self) -> None:
        """Forget the optimizer's moments and step count, as a new AdamW would (for training anew)."""
        self.optimizer.state.clear()

    def snapshot(self) -> tuple[dict[str, Tensor], dict]:
        """Model, optimizer and the global random generators (dropout; the GPU's too when the model is on
        one): (named tensors, JSON-able rest)."""
        optimizer, rest = optimizer_tensors(self.optimizer)
        tensors = {**prefixed("model", self.module.state_dict()), **prefixed("optimizer", optimizer),
                   "rng.torch": torch.get_rng_state()}
        if self.values.is_cuda:
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.values.device)
        return tensors, rest

    def restore(self, tensors: dict[str, Tensor], optimizer_rest: dict) -> None:
        self.module.load_state_dict(unprefixed("model", tensors))
        restore_optimizer(self.optimizer, unprefixed("optimizer", tensors), optimizer_rest)
        torch.set_rng_state(tensors["rng.torch"])
        if self.values.is_cuda and "rng.cuda" in tensors:  # a run begun on the CPU draws anew on the GPU
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.values.device)

