import pytest

from elman.experiments import xor


@pytest.mark.slow
def test_trained_network_shows_the_period_three_sawtooth():
    result = xor.run(xor.XorConfig(passes=60), progress=False)
    assert len(result.error_by_cycle) == 12
    assert result.sawtooth
    # the XOR bit (after inputs 2, 5, 8, 11) is learnt; a random bit cannot be predicted below chance (0.25)
    assert max(result.error_by_cycle[1::3]) < 0.05
    assert min(result.error_by_cycle[0::3] + result.error_by_cycle[2::3]) > 0.15


def test_untrained_network_shows_no_sawtooth():
    result = xor.run(xor.XorConfig(passes=0), progress=False)
    assert not result.sawtooth


def test_format_result_marks_the_predictable_positions():
    result = xor.run(xor.XorConfig(passes=0, eval_windows=2), progress=False)
    text = xor.format_result(result)
    assert text.count("<- XOR bit next") == 4
    assert "sawtooth: NO" in text
