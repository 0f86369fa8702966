"""Training a character language model: one long text by stateful truncated BPTT, or separate lines
(optionally conditioned on a label) -> AdamW steps -> best checkpoint by validation loss, metrics, plot.

Long text: the text is cut into ``batch_size`` parallel streams and time into chunks of ``chunk_length``
steps; each chunk starts from the previous chunk's final state, detached, so gradients flow back at most
one chunk while the state runs through the whole epoch. Lines (names, one sequence per row): each is read
``<bos> chars <eos>`` from a fresh state, or from its condition's embedding in a conditioned model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn

from elman.checkpoint import save_checkpoint
from elman.data.batches import TextBatch, line_batches, stream_batches
from elman.data.language import LanguageData, prepare_lines, prepare_text, read_lines_file
from elman.data.text import read_text
from elman.errors import UsageError, refused_as_usage
from elman.files import atomic_write_text
from elman.metrics import loss_report
from elman.models.language_model import LanguageModel, LanguageModelConfig, line_loss, stream_loss
from elman.options import common, option, positive_int
from elman.training.calibration import calibrate
from elman.training.loop import Phase, Progress, Run, Tally, open_run
from elman.training.optimisation import Optimisation
from elman.training.plots import plot_language_curves
from elman.training.precision import autocast, resolve
from elman.training.processes import Processes, join_processes, training_device
from elman.training.schedule import warmup_stable_decay

# the estimate during training: fuller GEMMs, the same figure (docs/measurements.md, "The validation estimate")
VALIDATION_SEGMENTS, VALIDATION_BURN_IN = 128, 128

# The defaults of a kind of data, over the config dataclasses' own (docs/measurements.md): a long text
# overfits without dropout ("Dropout and network size"), a long budget affords a deeper network, names
# overfit within a minute and need more weight decay ("Language model of lines").
PRESETS = {
    "text": {"dropout": 0.1, "embedding_dropout": 0.1, "weight_decay": 0.4},
    "long text": {"hidden_size": 640, "num_layers": 3, "dropout": 0.05, "embedding_dropout": 0.1, "weight_decay": 0.4},
    "lines": {"dropout": 0.3, "embedding_dropout": 0.1, "weight_decay": 0.8},
}
LONG_RUN_SECONDS = 300.0  # a long text trained with at least this time budget is a "long text"


def preset_for(kind: str, time_budget: float | None) -> str:
    """The preset of a run on ``kind`` ("text" or "lines") data under ``time_budget``."""
    if kind == "lines":
        return "lines"
    return "long text" if time_budget is not None and time_budget >= LONG_RUN_SECONDS else "text"


def model_options_for(kind: str, time_budget: float | None, given: dict | None) -> dict:
    """The model options a run uses: its preset's, and over them those ``given``."""
    model_fields = {f.name for f in fields(LanguageModelConfig)}
    preset = PRESETS[preset_for(kind, time_budget)]
    return {**{k: v for k, v in preset.items() if k in model_fields}, **(given or {})}


@dataclass
class LanguageTrainConfig:
    epochs: int = common("epochs", 100)
    batch_size: int = common("batch_size", 64)
    # 64 beat 128 at a fixed time
    chunk_length: int = option(64, "truncated-BPTT steps per chunk of a long text", type=positive_int)
    learning_rate: float = common("learning_rate", 2e-3)
    weight_decay: float | None = common("weight_decay", None)  # None: the preset's (PRESETS)
    warmup_fraction: float = 0.02
    # the rate holds at its peak after the warm-up, then falls to 0 over this last part of the run; a
    # cosine over the whole run overfits sooner (docs/measurements.md, "Learning-rate plateau")
    decay_fraction: float = 0.45
    clip_norm: float = 1.0
    time_budget: float | None = common("time_budget", None)  # the schedule then runs on time
    eval_interval: int | None = option(None, "steps between validations (None: after every epoch)",
                                       type=positive_int)
    patience: int = common("patience", 20)
    val_fraction: float = option(0.1, "held out for validation when no validation data is given: a long text's end, "
                                 "or random lines", type=float)
    calibration_fraction: float = option(0.02, "of the training data, held out to fit the output's temperature "
                                         "(0: none)", type=float)
    max_length: int = common("max_length", 64)
    seed: int = common("seed", 0)
    threads: int | None = common("threads", None)
    precision: str = common("precision", "auto")
    # the data stay on the CPU; on a GPU the recurrence runs in cuDNN, in float32
    device: str = option("cpu", "where the model trains: cpu, cuda or cuda:N")
    checkpoint_every: int = common("checkpoint_every", 200)


def read_language_data(path: str | Path, config: LanguageTrainConfig, val_path: str | Path | None = None,
                       lines: bool = False, text_column: str | None = None, condition_column: str | None = None,
                       split_column: str | None = None) -> LanguageData:
    """Read a training corpus: separate lines (a CSV file, ``lines=True``, or a named column), else one long
    text validated on ``val_path`` or the end of the text."""
    path = Path(path)
    as_lines = lines or path.suffix.lower() == ".csv" or any((text_column, condition_column, split_column))
    if not as_lines:
        return prepare_text(read_text(path), None if val_path is None else read_text(val_path), config.val_fraction,
                            str(path), config.calibration_fraction)
    if val_path is not None:
        raise UsageError("--val-data is for long texts; for lines, give the file a split column or use "
                         "--val-fraction")
    data = read_lines_file(path, text_column, condition_column, split_column)
    return prepare_lines(data, condition_column is not None, config.val_fraction, config.max_length, config.seed,
                         config.calibration_fraction)


def validation_loss(model: LanguageModel, data: LanguageData, exact: bool = False, precision: str = "fp32") -> float:
    """Mean next-character loss on the validation data, nats. The figure reported (``exact``) is float32 and
    reads a long text in one pass; the estimate made during training runs in the training's ``precision``
    (bfloat16 nearly halves its cost: docs/measurements.md, "The validation estimate")."""
    with autocast("fp32" if exact else precision, model.output.weight.device):
        if data.kind == "lines":
            return line_loss(model, *data.val)
        if exact:
            return stream_loss(model, data.val[0])
        return stream_loss(model, data.val[0], VALIDATION_SEGMENTS, VALIDATION_BURN_IN)


def epoch_batches(data: LanguageData, config: LanguageTrainConfig, generator: torch.Generator) -> list[TextBatch]:
    if data.kind == "text":
        text = data.train[0]
        offset = int(torch.randint(min(config.chunk_length, text.shape[0] - 1), (1,), generator=generator))
        return stream_batches(text, config.batch_size, config.chunk_length, offset)
    return line_batches(*data.train, config.batch_size, generator)


def share(batch: TextBatch, processes: Processes) -> TextBatch:
    """This process's rows of a global batch."""
    return TextBatch(processes.rows(batch.inputs), processes.rows(batch.targets), processes.rows(batch.lengths),
                     processes.rows(batch.conditions), batch.continues)


def loss_sum(network: nn.Module, batch: TextBatch,
             hidden: torch.Tensor | None) -> tuple[torch.Tensor, int, torch.Tensor]:
    """(summed next-character loss, characters scored, the final hidden state) of one batch."""
    logits, hidden = network(batch.inputs, hidden, batch.lengths, batch.conditions)
    loss = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch.targets.reshape(-1),
                                       ignore_index=0, reduction="sum")
    return loss, int((batch.targets != 0).sum()), hidden


class LanguageTask:
    """The loop's view of language modelling: batches of a long text's streams or of lines, the next-character
    loss, validation by the loss on the validation data (its negative is the score)."""

    unit = "characters"

    def __init__(self, model: LanguageModel, data: LanguageData, config: LanguageTrainConfig, run: Run,
                 checkpoint_config: dict):
        self.model, self.data, self.config, self.run = model, data, config, run
        self.checkpoint_config = checkpoint_config
        carried = run.state.carried  # the carried state of this process's streams, when a run resumes
        self.hidden = None if carried is None else \
            run.processes.rows(carried.transpose(0, 1)).transpose(0, 1).contiguous().to(model.output.weight.device)

    def epoch(self, generator: torch.Generator) -> list[TextBatch]:
        return epoch_batches(self.data, self.config, generator)

    def step(self, optimisation: Optimisation, batch: TextBatch, learning_rate: float) -> Tally:
        mine = share(batch, optimisation.processes).to(self.model.output.weight.device)
        total, count, hidden = optimisation.step(learning_rate, loss_sum, mine,
                                                 self.hidden if mine.continues else None)
        self.hidden = hidden.detach()
        return Tally(items=count, loss=total, divisor=count)

    def validate(self, progress: Progress, seconds: float) -> tuple[dict, float]:
        val_loss = validation_loss(self.model, self.data, precision=self.config.precision)
        record = {"step": progress.step, "epoch": progress.epoch, "seconds": seconds,
                  "train_loss": progress.since.mean_loss, "val_loss": val_loss,
                  "val_bits_per_char": val_loss / math.log(2), "chars_per_second": progress.since.per_second}
        return record, -val_loss

    def improved(self, progress: Progress) -> None:
        if self.run.processes.main:
            save_checkpoint(self.run.out_dir, self.model, self.data.vocabulary,
                            {**self.checkpoint_config, "step": progress.step})

    def carried(self) -> torch.Tensor | None:
        """Lines start afresh; a long text carries its state on, from batch to batch and across a resume."""
        return self.run.processes.gather_rows(self.hidden, dim=1) if self.data.kind == "text" else None

    def shown(self, since: Tally, record: dict | None) -> dict:
        if record is not None:
            return {"val": f"{record['val_loss']:.3f}", "val_bpc": f"{record['val_bits_per_char']:.3f}"}
        return {"loss": f"{since.mean_loss:.3f}", "bpc": f"{since.mean_loss / math.log(2):.3f}",
                "chars_s": f"{since.per_second:.0f}"}


def train_language_model(data: LanguageData, out_dir: str | Path, model_options: dict | None = None,
                         config: LanguageTrainConfig | None = None, progress: bool = True,
                         resume: bool = False) -> dict:
    """Train, keep the checkpoint with the best validation loss, write all outputs; returns metrics.json.

    Writes into ``out_dir``: the checkpoint (model.safetensors, vocab.json, config.json), metrics.json
    (history; exact validation loss, bits/char and perplexity of the kept model), curves.png, train.log,
    and every ``checkpoint_every`` steps the training state under ``resume/``. With ``resume``, continues
    from the newest intact training state in ``out_dir`` exactly as the interrupted run would have gone
    on (a run under a time budget continues with the time it had left).
    """
    config = config or LanguageTrainConfig()
    if not 0 < config.decay_fraction <= 1:
        raise UsageError(f"decay_fraction must be above 0 and at most 1, got {config.decay_fraction}")
    if config.weight_decay is None:
        config = replace(config, weight_decay=PRESETS[preset_for(data.kind, config.time_budget)]["weight_decay"])
    processes = join_processes()
    device = training_device(config.device, processes)
    resolve(config.precision, device)  # refuses a precision the device has not, before anything is written
    if data.kind == "text" and processes.world > 1 and config.batch_size % processes.world:
        raise UsageError(f"--batch-size {config.batch_size} streams cannot be shared evenly by {processes.world} "
                         "processes; use a multiple of the number of processes")
    torch.manual_seed(config.seed)
    with refused_as_usage("model options"):  # before anything is written
        model_config = LanguageModelConfig(vocab_size=len(data.vocabulary), num_conditions=len(data.conditions or []),
                                           **model_options_for(data.kind, config.time_budget, model_options))
        model = LanguageModel(model_config).to(device)
    checkpoint_config = {"task": "lm", "model": asdict(model_config), "kind": data.kind,
                         "conditions": data.conditions, "columns": data.columns, "max_length": config.max_length,
                         "training": asdict(config), "data": data.source}
    if data.conditions:  # the prior of the model read as a classifier (TextGenerator.classify)
        checkpoint_config["condition_counts"] = torch.bincount(data.train[2], minlength=len(data.conditions)).tolist()
    about_data = (f"{data.source}: {data.kind}, {data.train_characters} training characters, vocabulary "
                  f"{len(data.vocabulary)}" + (f", {len(data.conditions)} conditions" if data.conditions else ""))
    with open_run(Path(out_dir), model, model_config, config, processes, resume, about_data, progress,
                  decay_all=False, spared_from_decay=(model.output.weight,)) as run:
        task = LanguageTask(model, data, config, run, checkpoint_config)
        steps_per_epoch = len(epoch_batches(data, config, torch.Generator().manual_seed(config.seed)))
        run.train(task, Phase("train", config.epochs, steps_per_epoch, config.time_budget,
                              lambda done: warmup_stable_decay(done, config.learning_rate, config.warmup_fraction,
                                                               config.decay_fraction),
                              config.patience, config.eval_interval))
        return finish(run, model, data, checkpoint_config)


def finish(run: Run, model: LanguageModel, data: LanguageData, checkpoint_config: dict) -> dict:
    """After training: the best weights, calibrated where data were held out for it, scored exactly, and the
    outputs written. Returns metrics.json."""
    p, log = run.progress, run.log
    stopped = p.stopped or "epochs"
    log(f"stopped by {stopped} after {p.elapsed:.1f} s, {p.step} steps")
    model.load_state_dict(run.state.best_weights)
    metrics = {"stopped_by": stopped, "steps": p.step, "training_seconds": p.elapsed}
    if data.calibration is not None:
        before = validation_loss(model, data, exact=True)
        metrics["calibration"] = {**calibrate(model, data.kind, data.calibration), "val_loss_before": before}
        log(f"calibration: temperature {metrics['calibration']['temperature']:.3f}, fitted on "
            f"{metrics['calibration']['characters']} held-out characters; validation loss before {before:.4f}")
        if run.processes.main:
            best_step = min(p.history, key=lambda record: record["val_loss"])["step"]
            save_checkpoint(run.out_dir, model, data.vocabulary,
                            {**checkpoint_config, "step": best_step, "calibration": metrics["calibration"]})
    metrics["val"] = {**loss_report(validation_loss(model, data, exact=True)),
                      "characters": int(data.val[0].shape[0]) if data.kind == "text" else None}
    metrics["history"] = p.history
    if run.processes.main:
        atomic_write_text(run.out_dir / "metrics.json", json.dumps(metrics, indent=2))
        plot_language_curves(p.history, run.out_dir / "curves.png")
    log(f"validation loss {metrics['val']['loss']:.4f} nats/char, {metrics['val']['bits_per_char']:.4f} bits/char")
    return metrics
