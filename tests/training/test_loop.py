"""RunState.batches: the epoch/time-budget iterator both trainers run on; Optimisation.step: the update."""

import time

import pytest
import torch
from torch import nn

from elman.training.optimisation import Optimisation
from elman.training.processes import Processes
from elman.training.progress import Progress, RunState


def fresh_state() -> RunState:
    return RunState(Progress(), torch.Generator().manual_seed(0))


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
        state.progress.step += 1
        state.progress.batch += 1
        if stop_after is not None and state.progress.step == stop_after:
            state.progress.stopped = "early stopping"
    return seen


def test_epochs_of_fresh_batch_orders_each_followed_by_an_epoch_end():
    state = fresh_state()
    seen = run(state)
    assert [s is None for s in seen] == [False] * 4 + [True] + [False] * 4 + [True]
    first, second = [b for b, _ in seen[:4]], [b for b, _ in seen[5:9]]
    assert sorted(first) == sorted(second) == [0, 1, 2, 3] and first != second
    assert [p for _, p in seen[:4] + seen[5:9]] == [step / 8 for step in range(8)]
    assert state.progress.epoch == 3 and state.progress.stopped is None


def test_a_stop_set_by_the_caller_ends_the_run_at_once():
    state = fresh_state()
    seen = run(state, stop_after=2)
    assert len(seen) == 2 and state.progress.stopped == "early stopping" and state.progress.epoch == 1


def test_a_spent_time_budget_ends_the_run_after_its_first_step():
    state = fresh_state()
    seen = run(state, time_budget=1e-9)
    assert len(seen) == 1 and state.progress.stopped == "time budget"


def test_a_run_taken_up_mid_epoch_sees_the_batches_it_had_left():
    whole = run(fresh_state())
    interrupted = fresh_state()
    head = run(interrupted, stop_after=6)  # two batches into the second epoch
    interrupted.progress.stopped = None
    tail = run(interrupted)
    assert head + tail == whole


def small_network() -> nn.Module:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    network[0].bias.requires_grad_(False)  # frozen parameters stay as they are
    return network


@pytest.mark.parametrize("clip_norm", [1e-3, 1e3])  # the clip acts / does not
def test_a_step_is_torchs_gradient_clipping_then_its_adamw_step(clip_norm):
    ours, theirs = small_network(), small_network()
    run = Optimisation(ours, 0.1, 0.01, clip_norm, "fp32", Processes())
    trained = [p for p in theirs.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=0.1, weight_decay=0.01, fused=True)
    x = torch.randn(5, 3, dtype=torch.float64)
    for rate in (0.1, 0.05, 0.02):  # three steps: moments and step counts carry over
        total, count, extra = run.step(rate, lambda network, inputs: (network(inputs).pow(2).sum(), 5, "out"), x)
        optimizer.zero_grad()
        (theirs(x).pow(2).sum() / 5).backward()
        nn.utils.clip_grad_norm_(trained, clip_norm)
        for group in optimizer.param_groups:
            group["lr"] = rate
        optimizer.step()
        assert count == 5 and total > 0 and extra == "out"  # the forward pass's third value comes back
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)  # the clip factor is float32
    assert torch.equal(ours[0].bias, small_network()[0].bias)
    ours_state = run.optimizer.state_dict()["state"][0]  # one buffer: the trained parameters in order
    theirs_state = optimizer.state_dict()["state"]
    torch.testing.assert_close(ours_state["step"], theirs_state[0]["step"])
    for key in ("exp_avg", "exp_avg_sq"):
        theirs_flat = torch.cat([theirs_state[i][key].reshape(-1) for i in sorted(theirs_state)])
        torch.testing.assert_close(ours_state[key], theirs_flat, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("decay_all,spare_linear", [(True, False), (False, False), (False, True)])
def test_weight_decay_shrinks_every_parameter_or_only_the_weight_matrices(decay_all, spare_linear):
    torch.manual_seed(0)
    network = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 2)).double()
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    run = Optimisation(network, 0.1, 0.5, 1.0, "fp32", Processes(), decay_all=decay_all,
                       spared_from_decay=(network[1].weight,) if spare_linear else ())
    run.step(0.1, lambda model: (model(torch.tensor([1, 2])).sum() * 0, 2, None))  # zero gradients: Adam moves nothing
    for name, p in network.named_parameters():
        # the Linear's weight unless spared; not its bias, not the embedding table
        shrunk = decay_all or (name == "1.weight" and not spare_linear)
        torch.testing.assert_close(p, before[name] * (1 - 0.1 * 0.5 if shrunk else 1.0), rtol=1e-12, atol=0)


def test_trained_parameters_become_views_of_one_buffer_and_keep_their_values():
    network = small_network()
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    run = Optimisation(network, 0.1, 0.0, 1.0, "fp32", Processes())
    trained = [p for p in network.parameters() if p.requires_grad]
    assert run.values.numel() == sum(p.numel() for p in trained)
    assert all(p.untyped_storage().data_ptr() == run.values.untyped_storage().data_ptr() for p in trained)
    assert all(p.grad.untyped_storage().data_ptr() == run.gradients.untyped_storage().data_ptr() for p in trained)
    for name, p in network.named_parameters():
        assert torch.equal(p, before[name])
    network.load_state_dict({name: torch.zeros_like(value) for name, value in before.items()})
    assert run.values.abs().sum() == 0  # loading writes into the buffer


@pytest.mark.parametrize("threads,expected", [(None, 1), (3, 3)])  # chosen for a small model, or as asked
def test_a_small_models_step_runs_on_one_thread_and_the_setting_is_restored(threads, expected):
    network, seen = small_network(), []
    run = Optimisation(network, 0.1, 0.0, 1.0, "fp32", Processes(), threads=threads)
    before = torch.get_num_threads()
    x = torch.randn(5, 3, dtype=torch.float64)

    def loss_sum(model):
        seen.append(torch.get_num_threads())
        return model(x).sum(), 5, None

    run.step(0.1, loss_sum)
    assert seen == [expected] and torch.get_num_threads() == before
