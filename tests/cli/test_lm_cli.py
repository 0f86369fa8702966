"""The language-model commands as a user runs them: real processes where the run itself is the point, the
refusals in this process (the `cli` fixture); clear errors, no tracebacks."""

import json
import subprocess
import sys

import pytest
import torch


def elman(*args):
    return subprocess.run([sys.executable, "-m", "elman", *map(str, args)], capture_output=True, text=True)


def test_train_evaluate_generate_from_the_command_line(story_txt, tmp_path):
    out = tmp_path / "lm"
    run = elman("train", "--task", "lm", "--data", story_txt, "--out", out, "--epochs", "2", "--hidden-size", "32",
                "--num-layers", "1", "--batch-size", "8", "--chunk-length", "16", "--calibration-fraction", "0.2",
                "--embedding-dropout", "0.05", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads((out / "config.json").read_text())["model"]["embedding_dropout"] == 0.05
    trained = json.loads(run.stdout)
    assert trained["stopped_by"] == "epochs" and trained["val"]["loss"] > 0
    assert trained["calibration"]["characters"] > 1000 and trained["calibration"]["temperature"] > 0
    validation = tmp_path / "val.txt"
    text = story_txt.read_text()
    validation.write_text(text[int(len(text) * 0.9):])
    run = elman("evaluate", "--model", out, "--data", validation, "--json")
    assert run.returncode == 0, run.stderr
    scores = json.loads(run.stdout)
    assert scores["loss"] == pytest.approx(trained["val"]["loss"], rel=1e-6)
    assert set(scores) >= {"loss", "bits_per_char", "perplexity", "characters"}
    first = elman("generate", "--model", out, "--prime", "the", "--length", "40", "--seed", "3", "--num-samples", "2",
                  "--top-k", "5", "--top-p", "0.9", "--temperature", "0.8", "--json")
    again = elman("generate", "--model", out, "--prime", "the", "--length", "40", "--seed", "3", "--num-samples", "2",
                  "--top-k", "5", "--top-p", "0.9", "--temperature", "0.8", "--json")
    assert first.returncode == 0, first.stderr
    samples = json.loads(first.stdout)["samples"]
    assert samples == json.loads(again.stdout)["samples"] and len(samples) == 2
    assert all(s.startswith("the") and len(s) == 43 for s in samples)


def test_conditioned_names_from_the_command_line(conditioned_lm):
    out, _ = conditioned_lm
    run = elman("generate", "--model", out, "--condition", "Japanese", "--num-samples", "5", "--seed", "0")
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 5
    run = elman("generate", "--model", out, "--condition", "Japanese", "--num-samples", "5", "--seed", "0",
                "--guidance", "1.5")
    assert run.returncode == 0 and len(run.stdout.splitlines()) == 5, run.stderr
    run = elman("generate", "--model", out, "--condition", "Japanese", "--guidance", "-2")
    assert run.returncode == 2 and "guidance must be a number from 0 to 100" in run.stderr
    run = elman("generate", "--model", out, "--condition", "Klingon")
    assert run.returncode == 2 and "unknown condition 'Klingon'; this model knows ['Japanese'" in run.stderr


@pytest.mark.parametrize("content,message", [
    (b"", "the file is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", "NUL byte; this looks like a binary"),
])
def test_bad_training_files_get_one_clear_line(cli, tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    run = cli("train", "--task", "lm", "--data", path, "--out", tmp_path / "out")
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_prime_with_unknown_characters_and_wrong_model_kind(cli, trained_lm, trained_model):
    run = cli("generate", "--model", trained_lm[0], "--prime", "the ☃ ")
    assert run.returncode == 2 and "never saw: ['☃']" in run.stderr and "Traceback" not in run.stderr
    run = cli("generate", "--model", trained_model[0])
    assert run.returncode == 2 and "needs a language model (--task lm)" in run.stderr
    run = cli("predict", "--model", trained_lm[0], "Sato")
    assert run.returncode == 2 and "this language model cannot classify" in run.stderr
    assert "--task classify" in run.stderr


def test_options_of_the_other_task_are_refused(cli, story_txt, tmp_path):
    run = cli("train", "--task", "lm", "--data", story_txt, "--out", tmp_path, "--class-weighting", "none")
    assert run.returncode == 2 and "--class-weighting applies to --task classify only" in run.stderr
    run = cli("train", "--task", "lm", "--data", story_txt, "--out", tmp_path, "--no-refit")
    assert run.returncode == 2 and "--no-refit applies to --task classify only" in run.stderr
    run = cli("train", "--data", story_txt, "--out", tmp_path, "--calibration-fraction", "0.1")
    assert run.returncode == 2 and "--calibration-fraction applies to --task lm only" in run.stderr
    run = cli("train", "--data", story_txt, "--out", tmp_path, "--device", "cpu")
    assert run.returncode == 2 and "--device applies to --task lm only" in run.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_training_on_a_gpu_that_is_not_there_is_one_clear_line(cli, story_txt, tmp_path):
    run = cli("train", "--task", "lm", "--data", story_txt, "--out", tmp_path / "out", "--device", "cuda")
    assert run.returncode == 2 and "PyTorch sees no CUDA GPU here" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_bad_model_options_are_refused_before_anything_is_written(cli, story_txt, tmp_path):
    for option, value, message in [("--weight-dropout", "-0.5", "weight_dropout should be a number in range [0, 1)"),
                                   ("--embedding-dropout", "1.5", "dropout probability has to be between 0 and 1, "
                                    "but got 1.5"),
                                   ("--weight-decay", "-1", "--weight-decay: must be a number >= 0, got -1"),
                                   ("--calibration-fraction", "0.7", "calibration_fraction must be at least 0 and "
                                    "below 0.5, got 0.7")]:
        run = cli("train", "--task", "lm", "--data", story_txt, "--out", tmp_path / "o", option, value)
        assert run.returncode == 2 and message in run.stderr, run.stderr
        assert "Traceback" not in run.stderr and not (tmp_path / "o").exists()
