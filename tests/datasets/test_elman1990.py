import pytest
import torch

from elman.datasets.elman1990 import temporal_xor


def test_xor_stream_is_triplets_whose_third_bit_is_the_xor():
    stream = temporal_xor(3000, seed=5)
    assert stream.shape == (3000,)
    triplets = stream.view(-1, 3).long()
    assert torch.equal(triplets[:, 2], triplets[:, 0] ^ triplets[:, 1])
    assert set(stream.unique().tolist()) == {0.0, 1.0}


def test_xor_stream_is_deterministic_under_a_seed_and_differs_across_seeds():
    assert torch.equal(temporal_xor(300, seed=1), temporal_xor(300, seed=1))
    assert not torch.equal(temporal_xor(300, seed=1), temporal_xor(300, seed=2))


def test_xor_random_bits_are_roughly_balanced():
    pairs = temporal_xor(30000, seed=0).view(-1, 3)[:, :2]
    assert abs(pairs.mean().item() - 0.5) < 0.02


@pytest.mark.parametrize("bits", [0, -3, 10])
def test_xor_stream_length_must_be_a_positive_multiple_of_three(bits):
    with pytest.raises(ValueError, match="positive multiple of 3"):
        temporal_xor(bits)
