"""Two processes under torchrun (gloo) train like one process with the same global batch."""

import json
import subprocess
import sys

import pytest
import torch


def train(task, data, out, processes):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    options = ["--task", task, "--data", str(data), "--out", str(out), "--seed", "5", "--batch-size", "8",
               "--hidden-size", "24", "--num-layers", "2", "--epochs", "2", "--precision", "fp32", "--json",
               "--dropout", "0", "--weight-dropout", "0", "--embedding-dropout", "0",  # masks differ by process
               "--threads", "1",  # as torchrun gives each process: sums in the same order (the n-gram member's fit)
               "--checkpoint-every", "5"]
    if task == "lm":
        options += ["--chunk-length", "16"]
    else:  # every kind of member, the generative one included
        options += ["--generative-hidden-size", "16"]
    run = subprocess.run([*launcher, "-m", "elman", "train", *options], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("task", ["lm", "classify"])
def test_two_processes_follow_the_single_process_loss_curve(task, story_txt, names_csv, tmp_path):
    data = story_txt if task == "lm" else names_csv
    single = train(task, data, tmp_path / "one", 1)
    double = train(task, data, tmp_path / "two", 2)
    assert len(single["history"]) == len(double["history"]) == 2
    for one, two in zip(single["history"], double["history"], strict=True):
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
        assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)
    log = (tmp_path / "two" / "train.log").read_text()
    assert log.count("stopped by") == 1 and "2 process(es)" in log  # written once, by the first process
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_one_process_keeps_whole_batches():
    from elman.training.processes import Processes

    rows = torch.arange(6)
    assert Processes().rows(rows) is rows and Processes().rows(None) is None
    assert Processes(rank=1, world=2).rows(rows).tolist() == [1, 3, 5]
    assert Processes().gather_rows(rows, 0) is rows
