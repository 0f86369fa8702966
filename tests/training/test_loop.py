"""RunState.batches: the epoch/time-budget iterator both trainers run on."""

import time

import torch

from elman.training.loop import Processes, RunState


def fresh_state() -> RunState:
    progress = {"epoch": 1, "batch": 0, "step": 0, "stopped": None}
    return RunState(progress, torch.Generator().manual_seed(0))


def shuffled(generator: torch.Generator) -> list[int]:
    return torch.randperm(4, generator=generator).tolist()


def run(state: RunState, epochs: int = 2, time_budget: float | None = None, stop_after: int | None = None):
    """Drive the iterator as a trainer does; returns what it yielded (None marks an epoch's end)."""
    seen = []
    for item in state.batches(shuffled, epochs, total_steps=4 * epochs, time_budget=time_budget,
                              started=time.monotonic(), processes=Processes()):
        if item is None:
            seen.append(None)
            continue
        batch, progress = item
        seen.append((batch, progress))
        state.progress["step"] += 1
        state.progress["batch"] += 1
        if stop_after is not None and state.progress["step"] == stop_after:
            state.progress["stopped"] = "early stopping"
    return seen


def test_epochs_of_fresh_batch_orders_each_followed_by_an_epoch_end():
    state = fresh_state()
    seen = run(state)
    assert [s is None for s in seen] == [False] * 4 + [True] + [False] * 4 + [True]
    first, second = [b for b, _ in seen[:4]], [b for b, _ in seen[5:9]]
    assert sorted(first) == sorted(second) == [0, 1, 2, 3] and first != second
    assert [p for _, p in seen[:4] + seen[5:9]] == [step / 8 for step in range(8)]
    assert state.progress["epoch"] == 3 and state.progress["stopped"] is None


def test_a_stop_set_by_the_caller_ends_the_run_at_once():
    state = fresh_state()
    seen = run(state, stop_after=2)
    assert len(seen) == 2 and state.progress["stopped"] == "early stopping" and state.progress["epoch"] == 1


def test_a_spent_time_budget_ends_the_run_after_its_first_step():
    state = fresh_state()
    seen = run(state, time_budget=1e-9)
    assert len(seen) == 1 and state.progress["stopped"] == "time budget"


def test_a_run_taken_up_mid_epoch_sees_the_batches_it_had_left():
    whole = run(fresh_state())
    interrupted = fresh_state()
    head = run(interrupted, stop_after=6)  # two batches into the second epoch
    interrupted.progress["stopped"] = None
    tail = run(interrupted)
    assert head + tail == whole
