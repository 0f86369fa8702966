"""Resumable training: the whole state of a run, saved every few steps, so that ``--resume`` continues
exactly where a killed run stopped (bit-identical on CPU).

A training state is a directory ``OUT/resume/step-NNNNNNNNN/`` with ``state.safetensors`` (model,
optimizer, carried recurrent state, best weights, random-generator states) and ``state.json`` (step,
epoch, position in the epoch, history, early-stopping counters, the training config, and the sha256 of
the tensors). Both are written atomically; ``state.json`` comes last, so a directory without it is an
interrupted write. The newest two states are kept: if the newest is damaged, the run resumes from the
one before, and says so. Nothing is unpickled.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from elman.checkpoint import CONFIG, WEIGHTS, CheckpointError, sha256_of
from elman.errors import UsageError
from elman.files import atomic_output, atomic_write_text

RESUME = "resume"
TENSORS, META = "state.safetensors", "state.json"
KEEP = 2
FORMAT = "elman-training-state"
# 4: progress as the loop's Progress; 3: a classifier's run has two phases (selection, refit); 2: the optimizer's
# state is one buffer for all trained parameters; 1: one per parameter
FORMAT_VERSION = 4


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state as (tensors by name, JSON-able rest): no pickle needed."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in [*tensors.items(), *rest["scalars"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{name}": tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name[len(prefix) + 1 :]: tensor for name, tensor in tensors.items() if name.startswith(prefix + ".")}


def clean_interrupted_writes(out_dir: Path) -> list[Path]:
    """Remove what a crash in the middle of a write leaves: temporary files, and training-state
    directories without their ``state.json``. Returns what was removed."""
    removed = [*out_dir.glob(".*.tmp"), *(out_dir / RESUME).glob("*/.*.tmp")]
    for path in removed:
        path.unlink(missing_ok=True)
    for directory in sorted((out_dir / RESUME).glob("step-*")):
        if not (directory / META).is_file():
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed


def check_new_run_dir(out_dir: Path, overwrite: bool) -> None:
    """The command line's guard before a new run: ``out_dir`` must not be a file, nor silently lose a trained
    model or another run's training states (``overwrite`` allows that). The training functions themselves
    train wherever they are told."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a directory")
    held = [name for name in (WEIGHTS, CONFIG, RESUME) if (out_dir / name).exists()]
    if held and not overwrite:
        raise UsageError(f"--out {out_dir} already holds a run ({', '.join(held)}); continue it with --resume "
                         f"{out_dir}, replace it with --overwrite, or choose another --out")


def prepare_out_dir(out_dir: Path, resume: bool) -> None:
    """Make ``out_dir`` ready for a run: created, cleared of interrupted writes, and, for a fresh run, of an
    older run's training states, which would otherwise outrank the new run's (by step) and be resumed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_interrupted_writes(out_dir)
    if not resume:
        shutil.rmtree(out_dir / RESUME, ignore_errors=True)


def save_training_state(out_dir: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    directory = out_dir / RESUME / f"step-{step:09d}"
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_output(directory / TENSORS) as temporary:
        save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(temporary),
                  metadata={"format": FORMAT})
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": step, **meta,
              "sha256": sha256_of(directory / TENSORS)}
    atomic_write_text(directory / META, json.dumps(record))
    for older in sorted((out_dir / RESUME).glob("step-*"))[:-KEEP]:
        shutil.rmtree(older, ignore_errors=True)
    return directory


def _read_meta(directory: Path) -> dict:
    meta_path = directory / META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{meta_path}: not a readable training state ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not an elman training state")
    if meta.get("format_version", 1) != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: a training state of format version {meta.get('format_version', 1)}, "
                              f"written by another version of elman (this one resumes version {FORMAT_VERSION}); "
                              "start a new run")
    return meta


def _read(directory: Path) -> tuple[dict[str, torch.Tensor], dict]:
    meta, tensor_path = _read_meta(directory), directory / TENSORS
    if not tensor_path.is_file() or sha256_of(tensor_path) != meta.get("sha256"):
        raise CheckpointError(f"{tensor_path}: missing, truncated or corrupted (its sha256 does not match {META})")
    try:
        return load_file(str(tensor_path)), meta
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{tensor_path}: not a readable safetensors file ({error})") from None


def load_training_state(out_dir: Path) -> tuple[dict[str, torch.Tensor], dict, list[str]]:
    """The newest intact training state under ``out_dir`` -> (tensors, meta, problems with newer ones).

    Raises ``CheckpointError`` when there is none, naming every damaged file it found.
    """
    candidates = sorted((out_dir / RESUME).glob("step-*"), reverse=True)
    problems = []
    for directory in candidates:
        try:
            tensors, meta = _read(directory)
        except CheckpointError as error:
            problems.append(str(error))
            continue
        return tensors, meta, problems
    detail = "; ".join(problems) if problems else f"no training state in {out_dir / RESUME}"
    raise CheckpointError(f"cannot resume from {out_dir}: {detail}")


def saved_settings(out_dir: Path) -> dict[str, dict]:
    """The settings a run's training states record (config dicts by name, e.g. "training" and "model"), read
    from the newest readable ``state.json`` (every state of a run records the same); {} when there is none.
    The tensors are not checked here: resuming does that."""
    for directory in sorted((Path(out_dir) / RESUME).glob("step-*"), reverse=True):
        try:
            meta = _read_meta(directory)
        except CheckpointError:
            continue
        return {name: meta[name] for name in ("training", "model") if isinstance(meta.get(name), dict)}
    return {}


def check_same_config(saved: dict, current: dict, out_dir: Path, ignore: tuple[str, ...] = ()) -> None:
    """A resumed run must use the settings it started with (a time budget may change)."""
    current = json.loads(json.dumps(current))  # as it would read back: tuples become lists
    changed = sorted(key for key in set(saved) | set(current)
                     if key not in ignore and saved.get(key) != current.get(key))
    if changed:
        details = ", ".join(f"{key}: {saved.get(key)!r} -> {current.get(key)!r}" for key in changed)
        raise UsageError(f"{out_dir} was trained with other settings ({details}); resume with the same ones")
