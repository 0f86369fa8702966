"""Checkpoint directories: ``model.safetensors`` + ``vocab.json`` + ``config.json``, no pickle anywhere.

Each file is written atomically (temp file, fsync, ``os.replace``). ``config.json`` is written last and
records the sha256 of the two other files, so a directory whose files do not belong together (a crash
between two writes, a truncated copy, flipped bytes) is refused on load with a message naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from elman import __version__
from elman.data.vocabulary import Vocabulary
from elman.errors import UsageError
from elman.files import atomic_output, atomic_write_text

FORMAT = "elman-checkpoint"
FORMAT_VERSION = 1
WEIGHTS, VOCAB, CONFIG = "model.safetensors", "vocab.json", "config.json"
PICKLE_NAMES = ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt", "checkpoint.pt")


class CheckpointError(UsageError):
    """A checkpoint cannot be loaded; the message names the file and what is wrong with it."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def fitting_configuration(directory: Path) -> Iterator[None]:
    """Around building a model from a checkpoint's configuration and loading its weights: what goes wrong
    there (a missing key, a wrong type, weights of other shapes) becomes one ``CheckpointError`` naming the
    directory; a ``CheckpointError`` raised inside already names its file and passes as it is."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{directory}: the weights do not fit the configuration ({error})") from None


def model_config(config_class: type, config: dict, directory: Path):
    """``config_class`` built from the checkpoint's ``config["model"]``; options this elman does not know (a
    checkpoint written by a newer one) are refused by name rather than reported as a mismatch of weights."""
    options = config["model"]
    unknown = sorted(set(options) - {f.name for f in fields(config_class)})
    if unknown:
        written_by = config.get("elman_version", "?")
        advice = ("was it edited by hand?" if written_by == __version__ else
                  f"it was written by elman {written_by}; load it with that version or a newer one")
        raise CheckpointError(f"{directory / CONFIG}: model options {unknown} are unknown to elman {__version__}; "
                              + advice)
    return config_class(**options)


def save_checkpoint(directory: str | Path, model: torch.nn.Module, vocabulary: Vocabulary, config: dict) -> Path:
    """Write a checkpoint into ``directory`` (created if needed). ``config`` must be JSON-serialisable and
    hold at least ``task``; format, versions and file hashes are added."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_output(directory / WEIGHTS) as temporary:
        save_file(tensors, str(temporary), metadata={"format": FORMAT})
    atomic_write_text(directory / VOCAB, json.dumps(vocabulary.to_json(), ensure_ascii=False))
    record = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "elman_version": __version__,
        "torch_version": torch.__version__, **config,
        "sha256": {WEIGHTS: sha256_of(directory / WEIGHTS), VOCAB: sha256_of(directory / VOCAB)},
    }
    atomic_write_text(directory / CONFIG, json.dumps(record, indent=2, ensure_ascii=False))
    return directory


def load_checkpoint(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor], Vocabulary]:
    """-> (config, state dict, vocabulary). Raises ``CheckpointError`` for anything that is not a complete,
    intact elman checkpoint; never unpickles."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: a file, not a checkpoint directory" if directory.exists()
                              else f"{directory}: no such checkpoint directory")
    config_path = directory / CONFIG
    if not config_path.is_file():
        pickled = [name for name in PICKLE_NAMES if (directory / name).exists()]
        if pickled:
            raise CheckpointError(f"{directory / pickled[0]}: pickle-based checkpoints are refused (they can run "
                                  "code when loaded); elman checkpoints are safetensors + JSON")
        raise CheckpointError(f"{config_path}: missing; {directory} is not an elman checkpoint")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{config_path}: not valid JSON ({error}); the checkpoint is corrupt") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{config_path}: not an elman checkpoint (no \"format\": \"{FORMAT}\")")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{config_path}: checkpoint format version {config.get('format_version')!r}; "
                              f"this elman reads version {FORMAT_VERSION}")
    hashes = config.get("sha256")
    if not isinstance(hashes, dict):
        raise CheckpointError(f"{config_path}: no file hashes; the checkpoint is corrupt")
    for name in (WEIGHTS, VOCAB):
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from the checkpoint")
        if sha256_of(path) != hashes.get(name):
            raise CheckpointError(f"{path}: content does not match the hash in {CONFIG}; the file is truncated, "
                                  "corrupted or from another checkpoint")
    try:
        state = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{directory / WEIGHTS}: not a readable safetensors file ({error})") from None
    try:
        vocabulary = Vocabulary.from_json(json.loads((directory / VOCAB).read_text(encoding="utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as error:
        raise CheckpointError(f"{directory / VOCAB}: not a valid vocabulary ({error})") from None
    return config, state, vocabulary
