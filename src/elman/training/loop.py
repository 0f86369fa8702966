"""What both trainers do the same way: processes (one, or several under torchrun), the optimisation step,
and the snapshot of everything a resumed run needs.

Several processes: ``torchrun --nproc_per_node=N -m elman train ...`` starts N copies; each joins the
process group (gloo: the models train on the CPU), wraps its model in ``DistributedDataParallel`` and
takes every N-th row of each global batch. The loss of a step is summed over a process's rows and divided
by the number of scored items in the whole global batch (times N, since DDP averages the gradients), so the
update equals the one a single process makes on the whole batch. Every process validates (the weights are
the same everywhere, so every process takes the same decisions); only the first writes files and progress.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch import distributed as dist
from tqdm import tqdm

from elman.errors import UsageError
from elman.memory import keep_freed_memory
from elman.threads import torch_threads
from elman.training.precision import autocast, resolve
from elman.training.resume import (
    check_same_config,
    load_training_state,
    optimizer_tensors,
    prefixed,
    restore_optimizer,
    save_training_state,
    unprefixed,
)
from elman.training.schedule import run_progress


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """The process that writes files and shows progress."""
        return self.rank == 0

    def total(self, value: Tensor) -> Tensor:
        """``value`` summed over all processes."""
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value)
        return value

    def agreed(self, seconds: float) -> float:
        """The mean of a clock reading over the processes: what is decided on the clock (the end of a time
        budget, a learning rate following it) must be decided alike everywhere."""
        return float(self.total(torch.tensor([seconds], dtype=torch.float64))) / self.world if self.world > 1 \
            else seconds

    def rows(self, tensor: Tensor | None) -> Tensor | None:
        """This process's share of a global batch: every ``world``-th row, starting at ``rank``."""
        return tensor if tensor is None or self.world == 1 else tensor[self.rank :: self.world]

    def gather_rows(self, tensor: Tensor, dim: int) -> Tensor:
        """Inverse of ``rows`` along ``dim``: every process's share, interleaved back into the global batch."""
        if self.world == 1:
            return tensor
        shares = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(shares, tensor.contiguous())
        return torch.stack(shares, dim=dim + 1).flatten(dim, dim + 1)


def join_processes() -> Processes:
    """Under torchrun (``WORLD_SIZE`` > 1) join the process group; otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Processes()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return Processes(dist.get_rank(), dist.get_world_size())


def training_device(name: str, processes: Processes) -> torch.device:
    """The device a run trains on: "cpu", or "cuda" / "cuda:N" where PyTorch sees that GPU. Several
    processes (torchrun) train on the CPU only: their process group is gloo's."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"device must be cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UsageError(f"device must be cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise UsageError(f"device {name!r}: PyTorch sees no CUDA GPU here (a CPU build of torch, or no driver); "
                         "train with device cpu")
    if (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if processes.world > 1:
        raise UsageError(f"device {name!r}: several processes (torchrun) train on the CPU only; leave the device "
                         "at cpu, or train in one process on the GPU")
    return device


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


RESUMABLE_CHANGES = ("time_budget", "threads", "checkpoint_every", "device")  # settings a resumed run may change


@dataclass
class Tally:
    """What training steps add up: items trained on (texts or characters), their summed loss and what its
    mean divides by, correct predictions (classifier), and seconds spent stepping."""

    items: int = 0
    loss: float = 0.0
    divisor: float = 0.0
    correct: int = 0
    seconds: float = 0.0

    def add(self, other: Tally) -> None:
        self.items += other.items
        self.loss += other.loss
        self.divisor += other.divisor
        self.correct += other.correct
        self.seconds += other.seconds

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.divisor, 1e-12)

    @property
    def per_second(self) -> float:
        return self.items / max(self.seconds, 1e-9)


@dataclass
class Progress:
    """Where a run stands; saved with every training state (as JSON) and taken up by ``--resume``."""

    phase: str = "train"  # the loop's current phase ("select" and "refit" for a classifier)
    first_step: int = 0  # the step at which the current phase's schedule began
    epoch: int = 1  # of the current phase, from 1
    batch: int = 0  # batches of the current epoch done
    step: int = 0  # updates done, all phases together
    history: list[dict] = field(default_factory=list)  # a record per validation
    best: float | None = None  # the best validation score so far (higher is better)
    stale: int = 0  # validations since the best
    elapsed: float = 0.0  # seconds of the current phase, at the last training state
    stopped: str | None = None  # what ended the phase: "early stopping", "time budget", "interrupt"
    since: Tally = field(default_factory=Tally)  # the steps since the last validation
    records: dict[str, dict] = field(default_factory=dict)  # a task's results by name, for its metrics

    @classmethod
    def from_json(cls, saved: dict) -> Progress:
        return cls(**{**saved, "since": Tally(**saved["since"])})


class RunState:
    """Everything of a run that changes as it goes, besides model and optimizer; a training state under
    ``resume/`` is a snapshot of it with them (see ``elman.training.resume``)."""

    def __init__(self, progress: Progress, generator: torch.Generator):
        self.progress = progress
        self.best_weights: dict[str, Tensor] | None = None
        self.generator = generator  # draws each epoch's batch order
        self.epoch_start = generator.get_state()  # the batch-order generator as the current epoch began
        self.carried: Tensor | None = None  # a long text's hidden state (L, B, H), whole global batch

    def batches(self, epoch_batches: Callable[[torch.Generator], Sequence], epochs: int, total_steps: int,
                time_budget: float | None, started: float, processes: Processes,
                first_step: int = 0) -> Iterator[tuple[Any, float] | None]:
        """The run's batches from where it stands, epoch after epoch, each with how far the run is (0 to 1,
        for the learning-rate schedule); ``None`` after each complete epoch, where the caller validates.
        ``first_step``: the value of ``progress.step`` where this schedule began (a run of several
        schedules numbers its steps on).

        Ends when the epochs are done, when the time budget is spent (``progress.stopped`` is then "time
        budget"; at least one step is always taken) or when the caller sets ``progress.stopped``. The caller
        counts the steps it takes in ``progress.step`` and ``progress.batch``, so that a training state saved
        between batches knows where to go on.
        """
        p = self.progress
        while p.stopped is None and p.epoch <= epochs:
            self.generator.set_state(self.epoch_start)
            for batch in epoch_batches(self.generator)[p.batch :]:
                elapsed = processes.agreed(time.monotonic() - started)
                if p.step > first_step and time_budget is not None and elapsed > time_budget:
                    p.stopped = "time budget"
                    return
                yield batch, run_progress(p.step - first_step, total_steps, elapsed, time_budget)
                if p.stopped is not None:
                    return
            yield None
            if p.stopped is None:
                p.epoch += 1
                p.batch = 0
                self.epoch_start = self.generator.get_state()

    @contextlib.contextmanager
    def ends_on_interrupt(self, processes: Processes) -> Iterator[None]:
        """Ctrl-C inside ends the phase as a time budget would: ``progress.stopped`` becomes "interrupt" and the
        caller keeps what was learnt. Once no step was taken, there is nothing to keep, and with several
        processes the others may wait inside a collective operation for this one: then the interrupt goes on up."""
        try:
            yield
        except KeyboardInterrupt:
            if processes.world > 1 or self.progress.step == 0:
                raise
            self.progress.stopped = "interrupt"

    def record(self, score: float, weights: dict[str, Tensor]) -> bool:
        """Note a validation score (higher is better) for early stopping, keeping a copy of the best weights.
        Returns whether the score improved on the best so far."""
        p = self.progress
        improved = p.best is None or score > p.best
        if improved:
            p.best, p.stale = score, 0
            self.best_weights = copy.deepcopy(weights)
        else:
            p.stale += 1
        return improved

    def resume(self, out_dir: Path, run: Optimisation, settings: dict[str, dict]) -> list[str]:
        """Take up the newest intact training state; ``settings`` (config dicts by name) must match the
        saved ones. Returns lines for the log."""
        tensors, meta, problems = load_training_state(out_dir)
        for name, current in settings.items():
            check_same_config(meta[name], current, out_dir, RESUMABLE_CHANGES if name == "training" else ())
        run.restore(tensors, meta["optimizer"])
        self.progress = Progress.from_json(meta["progress"])
        self.best_weights = unprefixed("best", tensors) or None
        self.epoch_start = tensors["rng.epoch_start"]
        self.carried = tensors.get("carried")
        notes = [f"{problem}; resuming from the training state before it" for problem in problems]
        return [*notes, f"resumed at step {meta['step']} (epoch {self.progress.epoch}) from {out_dir / 'resume'}"]

    def save(self, out_dir: Path, run: Optimisation, settings: dict[str, dict], processes: Processes) -> None:
        tensors, optimizer_rest = run.snapshot()
        tensors["rng.epoch_start"] = self.epoch_start
        if self.best_weights is not None:
            tensors.update(prefixed("best", self.best_weights))
        if self.carried is not None:
            tensors["carried"] = self.carried
        if processes.main:
            save_training_state(out_dir, self.progress.step, tensors,
                                {"progress": asdict(self.progress), "optimizer": optimizer_rest, **settings})


class RunLog:
    """``train.log``, written by the main process only (appended to when a run resumes); call it with a line."""

    def __init__(self, path: Path, processes: Processes, append: bool):
        self.path, self.processes, self.append, self.file = path, processes, append, None

    def __enter__(self) -> RunLog:
        if self.processes.main:
            self.file = open(self.path, "a" if self.append else "w", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
        return self

    def __call__(self, message: str) -> None:
        if self.file is not None:
            self.file.write(message + "\n")
            self.file.flush()

    def begin(self, resume_notes: list[str], data: str, model: nn.Module, model_config, training_config) -> None:
        """The opening lines: where a resumed run took up, or what a new run learns from and with what."""
        for note in resume_notes:
            self(note)
        if not self.append:
            self(f"data {data}")
            total = sum(q.numel() for q in model.parameters())
            stepped = sum(q.numel() for q in model.parameters() if q.requires_grad)
            self(f"model {asdict(model_config)}; {total} parameters"
                 + (f", {stepped} of them trained by the optimizer's steps" if stepped != total else ""))
            device = next(model.parameters()).device
            precision = resolve(training_config.precision, device)
            self(f"training {asdict(training_config)}; on {device}, precision {precision}; "
                 f"{self.processes.world} process(es)")

    def __exit__(self, *exception) -> None:
        if self.file is not None:
            self.file.close()


class ThroughputWatch:
    """Says once, in the log and above the progress bar, when a run's throughput falls far below its own: a
    window of ``WINDOW_SECONDS`` of training under ``SLOW_SHARE`` of the best window of the run's first
    ``REFERENCE_SECONDS``, as when other processes take the cores (see elman/threads.py)."""

    WINDOW_SECONDS, REFERENCE_SECONDS, SLOW_SHARE = 10.0, 60.0, 0.4

    def __init__(self, unit: str, log: RunLog):
        self.unit, self.log = unit, log
        self.elapsed = self.items = self.seconds = self.best = 0.0
        self.warned = False

    def update(self, items: float, seconds: float, bar) -> None:
        """Count ``items`` trained in ``seconds`` of a step; ``bar`` is the run's progress bar."""
        self.items += items
        self.seconds += seconds
        if self.seconds < self.WINDOW_SECONDS:
            return
        rate = self.items / self.seconds
        self.elapsed += self.seconds
        self.items = self.seconds = 0.0
        if self.elapsed <= self.REFERENCE_SECONDS:
            self.best = max(self.best, rate)
        elif not self.warned and rate < self.SLOW_SHARE * self.best:
            self.warned = True
            message = (f"throughput fell to {rate:.0f} {self.unit}/s, {rate / self.best:.0%} of this run's first "
                       f"minute ({self.best:.0f}/s): other processes are probably using its cores. The run goes "
                       "on; fewer threads (--threads 1) hold up better on a busy machine.")
            self.log(message)
            bar.write(message)


class Task(Protocol):
    """What a trainer gives the loop: its data, its step and its validation. The loop owns the rest."""

    unit: str  # what the throughput counts: "texts" or "characters"
    model: nn.Module

    def epoch(self, generator: torch.Generator) -> Sequence:
        """One epoch's global batches, in the order ``generator`` draws."""

    def step(self, run: Optimisation, batch: Any, learning_rate: float) -> Tally:
        """One update on this process's share of ``batch``; what it adds up (``seconds`` is the loop's)."""

    def validate(self, progress: Progress, seconds: float) -> tuple[dict, float | None]:
        """After an epoch or ``eval_interval`` steps: the record for the log and the history, and the score
        early stopping reads (higher is better; None in a phase without validation: the record is only
        logged)."""

    def improved(self, progress: Progress) -> None:
        """The last validation was the best so far (its weights are kept): note it, write the checkpoint."""

    def carried(self) -> Tensor | None:
        """State carried from batch to batch (a long text's hidden state), whole global batch, to save."""

    def shown(self, tally: Tally, record: dict | None) -> dict:
        """What the progress bar shows after a step (``tally``: the steps since the last validation) or a
        validation (``record``)."""


@dataclass
class Phase:
    """One call of the loop: how long it trains, on what schedule, and how it validates."""

    name: str  # the progress bar's label
    epochs: int
    steps_per_epoch: int
    time_budget: float | None  # seconds; the schedule then runs on time and the phase ends at the budget
    learning_rate: Callable[[float], float]  # the rate at a point (0 to 1) of the phase
    patience: int = 0  # validations without improvement before early stopping
    eval_interval: int | None = None  # steps between validations; None: after every epoch


@dataclass
class Run:
    """A training run: the optimisation, its state, its log and where it writes. ``train`` is the loop."""

    optimisation: Optimisation
    state: RunState
    log: RunLog
    out_dir: Path
    settings: dict[str, dict]  # the configuration a resumed run must match
    checkpoint_every: int  # steps between training states (0: none)
    progress_bar: bool

    @property
    def progress(self) -> Progress:
        return self.state.progress

    @property
    def processes(self) -> Processes:
        return self.optimisation.processes

    def train(self, task: Task, phase: Phase) -> None:
        """Steps from where the run stands until the phase's epochs are done, its time budget is spent,
        early stopping or Ctrl-C; validates after every epoch (or ``eval_interval`` steps) and after the
        last steps, saves a training state every ``checkpoint_every`` steps."""
        p, processes = self.progress, self.processes
        started = time.monotonic() - p.elapsed
        total_steps = phase.epochs * phase.steps_per_epoch
        bar = tqdm(total=None if phase.time_budget else total_steps, initial=p.step - p.first_step, desc=phase.name,
                   unit="step", disable=not (self.progress_bar and processes.main))
        watch = ThroughputWatch(task.unit, self.log)
        with self.state.ends_on_interrupt(processes):
            for item in self.state.batches(task.epoch, phase.epochs, total_steps, phase.time_budget, started,
                                           processes, p.first_step):
                if item is None:  # an epoch is complete
                    if not phase.eval_interval:
                        self.validate(task, phase, time.monotonic() - started, bar)
                    continue
                batch, done = item
                began = time.monotonic()
                tally = task.step(self.optimisation, batch, phase.learning_rate(done))
                tally.seconds = time.monotonic() - began
                p.step += 1
                p.batch += 1
                p.since.add(tally)
                watch.update(tally.items, tally.seconds, bar)
                bar.update()
                bar.set_postfix(task.shown(p.since, None))
                if phase.eval_interval and p.step % phase.eval_interval == 0:
                    self.validate(task, phase, time.monotonic() - started, bar)
                if self.checkpoint_every and p.step % self.checkpoint_every == 0:
                    p.elapsed = time.monotonic() - started
                    self.state.carried = task.carried()
                    self.state.save(self.out_dir, self.optimisation, self.settings, processes)
        if p.since.items:  # steps since the last validation: an epoch cut short, or after the last interval
            self.validate(task, phase, time.monotonic() - started, bar, last=True)
        p.elapsed = time.monotonic() - started
        bar.close()

    def validate(self, task: Task, phase: Phase, seconds: float, bar, last: bool = False) -> None:
        p = self.progress
        record, score = task.validate(p, seconds)
        bar.set_postfix(task.shown(p.since, record))
        p.since = Tally()
        if score is None:
            self.log(json.dumps(record))
            return
        p.history.append(record)
        improved = self.state.record(score, task.model.state_dict())
        if improved:
            task.improved(p)
        self.log(json.dumps(record) + ("  (best)" if improved else ""))
        if not last and p.stale >= phase.patience and p.stopped is None:
            p.stopped = "early stopping"


@contextlib.contextmanager
def open_run(out_dir: Path, optimisation: Optimisation, model_config, config, resume: bool, about_data: str,
             threads_note: str, progress_bar: bool, phase: str = "train") -> Iterator[Run]:
    """A run beginning in ``phase``, or taken up from its newest training state (``resume``), with its log
    open. ``config`` is the training configuration (its ``seed`` draws the batch orders)."""
    state = RunState(Progress(phase=phase), torch.Generator().manual_seed(config.seed))
    settings = {"training": asdict(config), "model": asdict(model_config)}
    notes = state.resume(out_dir, optimisation, settings) if resume else []
    with RunLog(out_dir / "train.log", optimisation.processes, append=resume) as log:
        log.begin(notes, about_data, optimisation.module, model_config, config)
        log(threads_note)
        yield Run(optimisation, state, log, out_dir, settings, config.checkpoint_every, progress_bar)
