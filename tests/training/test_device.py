"""Training a language model on a chosen device: every device this machine has gives a checkpoint that loads
and scores alike on the CPU, and a run resumes exactly from an earlier training state (on a GPU, without
dropout between the layers: cuDNN draws that from a generator of its own, whose state cannot be saved), also
on another device. Bad devices and precisions are refused with a message saying what to use."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import elman
from elman.training.language import LanguageTrainConfig, read_language_data, train_language_model
from elman.training.precision import resolve
from elman.training.processes import Processes, training_device
from elman.training.resume import RESUME

# dropout: its random generators resume too (the GPU's as well, for the embedding dropout)
OPTIONS = {"embedding_dim": 16, "hidden_size": 32, "num_layers": 2, "dropout": 0.1, "embedding_dropout": 0.1}


def train(data_path, out, device, resume=False, options=OPTIONS, **conditioned):
    config = LanguageTrainConfig(epochs=3, batch_size=16, chunk_length=32, learning_rate=1e-2, device=device,
                                 checkpoint_every=5, seed=1)
    data = read_language_data(data_path, config, **conditioned)
    return train_language_model(data, out, options, config, progress=False, resume=resume)


@pytest.mark.parametrize("kind", ["text", "conditioned lines"])
def test_a_model_trained_on_any_device_loads_and_scores_alike_on_the_cpu(kind, device, story_txt, names_csv,
                                                                         tmp_path):
    data, conditioned = (story_txt, {}) if kind == "text" else (names_csv, {"condition_column": "nationality"})
    metrics = train(data, tmp_path, device, **conditioned)
    assert f"on {device}" in (tmp_path / "train.log").read_text()
    generator = elman.load(tmp_path)  # the checkpoint's tensors were written from the CPU, whatever trained them
    assert next(generator.model.parameters()).device.type == "cpu"
    if kind == "text":
        text = story_txt.read_text(encoding="utf-8")
        scored = generator.evaluate_text(text[int(len(text) * 0.9) :])
        assert scored["loss"] == pytest.approx(metrics["val"]["loss"], rel=1e-4)
        assert metrics["val"]["loss"] < 2.0  # it learnt the grammar's text (uniform over its letters: ~3.0)
    else:
        names = generator.generate(num_samples=5, seed=0, condition="Japanese")
        assert len(names) == 5 and all(isinstance(name, str) for name in names)


def test_a_run_resumes_exactly_from_an_earlier_training_state(device, story_txt, tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    options = OPTIONS if device == "cpu" else {**OPTIONS, "dropout": 0.0}
    train(story_txt, reference, device, options=options)
    shutil.copytree(reference, resumed)
    newest = sorted((resumed / RESUME).glob("step-*"))[-1]
    shutil.rmtree(newest)  # the run then goes on from the state before it, to the end again
    metrics = train(story_txt, resumed, device, resume=True, options=options)
    log = (resumed / "train.log").read_text()
    assert "resumed at step" in log
    expected, got = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(expected[name], got[name]) for name in expected), "weights differ after resuming"
    assert metrics["val"] == json.loads((reference / "metrics.json").read_text())["val"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_run_begun_on_the_gpu_goes_on_on_the_cpu(story_txt, tmp_path):
    train(story_txt, tmp_path, "cuda")
    shutil.rmtree(sorted((tmp_path / RESUME).glob("step-*"))[-1])
    metrics = train(story_txt, tmp_path, "cpu", resume=True)
    log = (tmp_path / "train.log").read_text()
    assert "resumed at step" in log and metrics["val"]["loss"] < 2.0


@pytest.mark.parametrize("name,message", [
    ("tpu", "device must be cpu, cuda or cuda:N, got 'tpu'"),
    ("cuda:x", "device must be cpu, cuda or cuda:N, got 'cuda:x'"),
    ("meta", "device must be cpu, cuda or cuda:N, got 'meta'"),
])
def test_unknown_devices_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        training_device(name, Processes())


def test_bf16_is_the_cpus_precision_only():
    assert resolve("bf16", "cpu") == "bf16" and resolve("auto", "cuda") == "fp32"
    with pytest.raises(ValueError, match="on a GPU the model trains in float32"):
        resolve("bf16", "cuda")


def test_a_gpu_that_is_not_there_is_refused_with_what_to_use():
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="this machine has"):
            training_device(f"cuda:{torch.cuda.device_count()}", Processes())
        with pytest.raises(ValueError, match="several processes"):
            training_device("cuda", Processes(rank=0, world=2))
    else:
        with pytest.raises(ValueError, match="PyTorch sees no CUDA GPU here.*device cpu"):
            training_device("cuda", Processes())
    assert training_device("cpu", Processes(rank=1, world=2)) == torch.device("cpu")
