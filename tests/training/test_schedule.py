import pytest

from elman.training.schedule import WARMUP_START, run_progress, warmup_cosine, warmup_stable_decay


def test_warm_up_then_cosine_to_zero():
    assert warmup_cosine(0.0, 2.0, 0.1) == pytest.approx(2.0 * WARMUP_START)
    assert warmup_cosine(0.05, 2.0, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(0.1, 2.0, 0.1) == pytest.approx(2.0)
    assert warmup_cosine(0.55, 2.0, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(1.0, 2.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(3.0, 2.0, 0.1) == warmup_cosine(1.0, 2.0, 0.1)  # past the end: clamped


def test_rate_never_rises_after_the_warm_up():
    rates = [warmup_cosine(step / 100, 1.0, 0.05) for step in range(5, 101)]
    assert all(a >= b for a, b in zip(rates[:-1], rates[1:], strict=True))


def test_no_warm_up():
    assert warmup_cosine(0.0, 1.0, 0.0) == pytest.approx(1.0)


def test_run_progress_counts_steps_or_seconds_whichever_is_further():
    assert run_progress(10, 100, elapsed=5.0, time_budget=None) == 0.1
    assert run_progress(10, 100, elapsed=5.0, time_budget=10.0) == 0.5  # the budget is half spent
    assert run_progress(90, 100, elapsed=5.0, time_budget=10.0) == 0.9  # the steps run out first
    assert run_progress(0, 100, elapsed=0.001, time_budget=0.0) == 1.0  # nothing left: the schedule's end


def test_warm_up_then_a_plateau_then_a_square_root_decay_to_zero():
    assert warmup_stable_decay(0.0, 2.0, 0.1, 0.3) == pytest.approx(2.0 * WARMUP_START)
    assert warmup_stable_decay(0.05, 2.0, 0.1, 0.3) == pytest.approx(1.0)
    assert warmup_stable_decay(0.1, 2.0, 0.1, 0.3) == warmup_stable_decay(0.7, 2.0, 0.1, 0.3) == 2.0
    assert warmup_stable_decay(0.775, 2.0, 0.1, 0.3) == pytest.approx(2.0 * (1 - 0.5))  # a quarter into the decay
    assert warmup_stable_decay(1.0, 2.0, 0.1, 0.3) == pytest.approx(0.0, abs=1e-12)
    assert warmup_stable_decay(3.0, 2.0, 0.1, 0.3) == warmup_stable_decay(1.0, 2.0, 0.1, 0.3)  # clamped
    rates = [warmup_stable_decay(step / 100, 1.0, 0.05, 0.3) for step in range(5, 101)]
    assert all(a >= b for a, b in zip(rates[:-1], rates[1:], strict=True))
    assert warmup_stable_decay(0.5, 1.0, 0.0, 1.0) == pytest.approx(1 - 0.5**0.5)  # all decay, no warm-up
