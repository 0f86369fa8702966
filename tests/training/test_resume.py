"""Killed runs resume exactly: SIGKILL at random points (also in the middle of writing a training state),
then --resume gives the same weights and metrics as a run that was never interrupted; damaged training
states are refused by name and the run goes on from the one before."""

import json
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from elman.checkpoint import CheckpointError
from elman.training.resume import load_training_state

TIMING = {"seconds", "texts_per_second", "chars_per_second", "training_seconds"}


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def training_args(task, data, out, resume=False, epochs=None):
    """The arguments of a short run whose settings are none of elman's defaults; ``epochs`` replaces its count
    (6 for lm, 30 for classify)."""
    common = ["--data", str(data), "--checkpoint-every", "3", "--seed", "3", "--batch-size", "8", "--json",
              "--hidden-size", "24", "--dropout", "0.1"]  # dropout: the random-generator state must resume too
    if task == "lm":
        common += ["--task", "lm", "--epochs", str(epochs or 6), "--num-layers", "2", "--chunk-length", "16"]
    else:
        # with every kind of member: the generative one's prior weight is fitted state too
        common += ["--task", "classify", "--epochs", str(epochs or 30), "--num-layers", "1", "--patience", "30",
                   "--generative-hidden-size", "16"]
    target = ["--resume", str(out)] if resume else ["--out", str(out)]
    return ["train", *common, *target]


def training_process(*args):
    return [sys.executable, "-m", "elman", *training_args(*args)]


def states(out):
    """The complete training states (those whose state.json was written), oldest first."""
    return sorted(p.parent.name for p in (out / "resume").glob("step-*/state.json"))


def phase(out, state):
    return json.loads((out / "resume" / state / "state.json").read_text())["progress"].get("phase")


def kill_at_random_points(task, data, out, kills, rng):
    """Start (or resume) the run and SIGKILL it shortly after it writes a new training state, ``kills`` times;
    one of the kills is aimed at the moment a training state is being written. A classifier's run has two
    phases (selection, then the refit on train + val): the kills after the first wait for the refit's."""
    done = 0
    while done < kills:
        seen = states(out)
        process = subprocess.Popen(training_process(task, data, out, bool(seen)), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        aim_at_write = done == kills - 1
        in_refit = task == "classify" and done > 0
        while process.poll() is None and time.monotonic() < deadline:
            if in_refit and not (states(out) and phase(out, states(out)[-1]) == "refit"):
                time.sleep(0.002)
                continue
            if aim_at_write and list((out / "resume").glob("step-*/.*.tmp")):
                break  # a temporary file of a training state exists right now
            if not aim_at_write and states(out) != seen:
                time.sleep(rng.uniform(0, 0.05))
                break
            time.sleep(0.002)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            done += 1
        else:
            pytest.fail(f"the run finished before kill {done + 1}; make it longer")


@pytest.mark.slow
@pytest.mark.parametrize("task,kills", [("lm", 5), ("classify", 3)])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(task, kills, story_txt, names_csv, tmp_path):
    data = story_txt if task == "lm" else names_csv
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    run = subprocess.run(training_process(task, data, reference), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr

    kill_at_random_points(task, data, interrupted, kills, random.Random(kills))
    # what a kill in the middle of writing leaves behind: a temporary file, a state without its state.json
    (interrupted / ".model.safetensors.x1y2.tmp").write_bytes(b"half")
    (interrupted / "resume" / "step-999999999").mkdir()
    (interrupted / "resume" / "step-999999999" / "state.safetensors").write_bytes(b"partial")
    # and a damaged newest training state: refused by name, the one before is used
    newest = interrupted / "resume" / states(interrupted)[-1] / "state.safetensors"
    data_bytes = bytearray(newest.read_bytes())
    data_bytes[len(data_bytes) // 2] ^= 0xFF
    newest.write_bytes(bytes(data_bytes))

    run = subprocess.run(training_process(task, data, interrupted, True), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    log = (interrupted / "train.log").read_text()
    assert f"{newest}: missing, truncated or corrupted" in log and "resuming from the training state before it" in log
    assert not list(interrupted.glob(".*.tmp")) and not (interrupted / "resume" / "step-999999999").exists()

    if task == "classify":
        assert phase(interrupted, states(interrupted)[-1]) == "refit"
    expected, got = load_file(reference / "model.safetensors"), load_file(interrupted / "model.safetensors")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[name], got[name]) for name in expected), "weights differ after resuming"
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (reference, interrupted)]
    assert without_timing(metrics[0]) == without_timing(metrics[1])


@pytest.mark.parametrize("task", ["lm", "classify"])
def test_a_run_resumed_with_only_its_data_goes_on_with_the_settings_it_began_with(task, cli, story_txt, names_csv,
                                                                                  tmp_path):
    data = story_txt if task == "lm" else names_csv
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run = cli(*training_args(task, data, reference, epochs=3))
    assert run.returncode == 0, run.stderr
    shutil.copytree(reference, resumed)
    shutil.rmtree(resumed / "resume" / states(resumed)[-1])  # it goes on from the state before, to the end again
    run = cli("train", "--task", task, "--data", data, "--resume", resumed, "--json")
    assert run.returncode == 0, run.stderr
    assert "resumed at step" in (resumed / "train.log").read_text()
    expected, got = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == got.keys() and all(torch.equal(expected[name], got[name]) for name in expected)
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (reference, resumed)]
    assert without_timing(metrics[0]) == without_timing(metrics[1])


def test_resume_refuses_other_settings_and_missing_states(cli, story_txt, tmp_path):
    out = tmp_path / "run"
    assert cli(*training_args("lm", story_txt, out, epochs=1)).returncode == 0
    resumed = training_args("lm", story_txt, out, resume=True)
    resumed[resumed.index("--hidden-size") + 1] = "32"
    run = cli(*resumed)
    assert run.returncode == 2 and "was trained with other settings" in run.stderr
    run = cli("train", "--data", story_txt, "--resume", out)  # no --task lm
    assert run.returncode == 2 and "holds a run of --task lm; resume it with --task lm" in run.stderr
    with pytest.raises(CheckpointError, match="no training state"):
        load_training_state(tmp_path / "elsewhere")


def test_resume_refuses_a_training_state_of_another_format_version(cli, story_txt, tmp_path):
    out = tmp_path / "run"
    assert cli(*training_args("lm", story_txt, out, epochs=1)).returncode == 0
    for state in (out / "resume").glob("step-*/state.json"):  # as an earlier elman wrote them
        meta = json.loads(state.read_text())
        del meta["format_version"]
        state.write_text(json.dumps(meta))
    run = cli(*training_args("lm", story_txt, out, resume=True))
    assert run.returncode == 2
    assert "format version 1, written by another version of elman" in run.stderr and "start a new run" in run.stderr


def test_a_new_run_neither_replaces_a_model_unasked_nor_leaves_an_older_runs_states(cli, story_txt, tmp_path):
    out = tmp_path / "run"
    assert cli(*training_args("lm", story_txt, out)).returncode == 0
    older_states, model = states(out), (out / "model.safetensors").read_bytes()

    shorter = training_args("lm", story_txt, out, epochs=1)
    run = cli(*shorter)
    assert run.returncode == 2
    assert f"--out {out} already holds a run" in run.stderr and f"--resume {out}" in run.stderr
    assert (out / "model.safetensors").read_bytes() == model and states(out) == older_states

    run = cli(*shorter, "--overwrite")
    assert run.returncode == 0, run.stderr
    # the older run's later states would outrank the new run's, and --resume would go on with the older run
    steps = [json.loads((out / "resume" / s / "state.json").read_text())["step"] for s in states(out)]
    assert steps and max(steps) <= json.loads(run.stdout)["steps"] < int(older_states[-1].removeprefix("step-"))

    run = cli(*training_args("lm", story_txt, out, resume=True), "--overwrite")
    assert run.returncode == 2 and "give one of them" in run.stderr
    (tmp_path / "file").write_text("")
    run = cli(*training_args("lm", story_txt, tmp_path / "file"))
    assert run.returncode == 2 and "is a file; give a directory" in run.stderr
