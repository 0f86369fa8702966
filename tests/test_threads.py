"""How many threads a run takes on a busy machine, and the run's word when its throughput collapses."""

import itertools

import pytest
import torch
from tqdm import tqdm

from elman import threads
from elman.training.run_log import ThroughputWatch


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: None)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


def machine(busy_share: float, monkeypatch):
    """/proc/stat as it would read on a machine whose cores are ``busy_share`` busy."""
    ticks = itertools.count(step=100)
    monkeypatch.setattr(threads, "_busy_and_total", lambda: (lambda t: (round(t * busy_share), t))(next(ticks)))


@pytest.mark.parametrize("busy_share,expected", [(0.0, 2), (0.05, 2), (0.5, 1), (0.7, 1), (1.0, 1)])
def test_a_run_takes_the_cores_that_are_free(two_cores, monkeypatch, busy_share, expected):
    machine(busy_share, monkeypatch)
    assert threads.free_cores() == expected


def test_torchrun_processes_share_the_free_cores(two_cores, monkeypatch):
    machine(0.0, monkeypatch)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.free_cores() == 1


def test_without_proc_stat_all_cores_count(two_cores, monkeypatch):
    monkeypatch.setattr(threads, "_busy_and_total", lambda: None)
    assert threads.free_cores() == 2


def test_the_real_machine_gives_a_usable_count():
    assert 1 <= threads.free_cores(window=0.05) <= threads.usable_cores()


def test_set_training_threads_says_what_it_chose(two_cores, monkeypatch):
    previous = torch.get_num_threads()
    try:
        assert threads.set_training_threads(1) == "threads: 1 (--threads)" and torch.get_num_threads() == 1
        machine(0.5, monkeypatch)
        assert threads.set_training_threads(None).startswith("threads: 1 (the cores free at the start, of 2")
    finally:
        torch.set_num_threads(previous)


def test_a_collapse_of_throughput_is_said_once_in_the_log_and_on_stderr_never_stdout(capsys):
    logged, bar = [], tqdm(disable=True)  # as in a run with --json: stdout must hold the JSON alone
    watch = ThroughputWatch("characters", logged.append)
    for _ in range(60):  # the first minute: 1,000 characters a second
        watch.update(1_000, 1.0, bar)
    for _ in range(15):  # a window at 600/s is slower, but not far below
        watch.update(600, 1.0, bar)
    assert logged == [] and capsys.readouterr().err == ""
    for _ in range(40):  # then 200/s, for several windows
        watch.update(200, 1.0, bar)
    shown = capsys.readouterr()
    assert len(logged) == 1 and shown.err == logged[0] + "\n" and shown.out == ""
    assert "throughput fell to 200 characters/s, 20% of this run's first minute (1000/s)" in logged[0]
