"""The language model: stateful reading equals one long pass, conditioning, and sampling."""

import pytest
import torch

from elman.inference.generator import sample_next
from elman.models.language_model import LanguageModel, LanguageModelConfig, line_loss, stream_loss


def model(**options):
    torch.manual_seed(0)
    return LanguageModel(LanguageModelConfig(vocab_size=12, embedding_dim=5, hidden_size=7, **options)).double()


def test_chunks_with_carried_state_equal_one_long_pass(device):
    lm = model(num_layers=2).to(device)
    ids = torch.randint(4, 12, (3, 50), device=device)
    whole, whole_state = lm(ids)
    state, pieces = None, []
    for start in range(0, 50, 13):
        logits, state = lm(ids[:, start : start + 13], state)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, 1), whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(state, whole_state, rtol=0, atol=1e-12)


def test_recurrent_weights_start_orthogonal_and_the_rest_as_nn_rnn():
    lm = model(num_layers=3)
    bound = 1 / 7**0.5
    for layer in range(3):
        w_hh = getattr(lm.rnn, f"weight_hh_l{layer}")
        torch.testing.assert_close(w_hh @ w_hh.T, torch.eye(7, dtype=torch.float64), rtol=0, atol=1e-6)
        assert float(getattr(lm.rnn, f"weight_ih_l{layer}").detach().abs().max()) <= bound


@pytest.mark.parametrize("chunk_length", [7, 64, 4096])
def test_stateful_evaluation_equals_one_long_forward_pass(chunk_length):
    lm = model()
    ids = torch.randint(4, 12, (300,))
    logits, _ = lm(ids[None, :-1])
    expected = torch.nn.functional.cross_entropy(logits[0], ids[1:]).item()
    assert stream_loss(lm, ids, chunk_length=chunk_length) == pytest.approx(expected, rel=1e-12)


def test_parallel_segments_with_burn_in_estimate_the_exact_loss():
    lm = model()
    ids = torch.randint(4, 12, (2000,))
    exact = stream_loss(lm, ids)
    assert stream_loss(lm, ids, segments=9, burn_in=60, chunk_length=50) == pytest.approx(exact, rel=1e-3)
    assert stream_loss(lm, ids, segments=9, burn_in=0) != exact  # cold starts differ: the estimate is not a copy


def test_line_loss_scores_every_character_and_the_end_once():
    lm = model()
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    lengths = torch.tensor([5, 3])
    first, _ = lm(ids[:1, :4])
    second, _ = lm(ids[1:, :2])
    nll = torch.nn.functional.cross_entropy(torch.cat([first[0], second[0]]), torch.tensor([5, 6, 7, 3, 8, 3]),
                                            reduction="sum")
    assert line_loss(lm, ids, lengths, None) == pytest.approx(nll.item() / 6, rel=1e-12)


@pytest.mark.parametrize("conditioned", [False, True])
def test_embedding_dropout_zeroes_and_rescales_the_character_embeddings_in_training_only(conditioned):
    lm = model(embedding_dropout=0.4, num_conditions=3 if conditioned else 0)
    plain = model(num_conditions=3 if conditioned else 0)
    plain.load_state_dict(lm.state_dict())
    ids = torch.randint(4, 12, (6, 40))
    conditions = torch.tensor([0, 1, 2, 0, 1, 2]) if conditioned else None
    read = []
    lm.rnn.register_forward_pre_hook(lambda module, args: read.append(args[0]))
    lm.train()
    lm(ids, conditions=conditions)
    embedded = lm.embedding(ids.t()).detach()
    added = lm.condition_inputs(conditions) if conditioned else 0
    characters = (read[0] - added).detach()  # (T, B, E): what the first layer read of the characters
    dropped = characters.abs() < 1e-12
    scale = characters[~dropped] / embedded[~dropped]  # one factor, 1 / (1 - p) with p as the hash resolves it
    torch.testing.assert_close(scale, torch.full_like(scale, float(scale[0])), rtol=1e-12, atol=0)
    assert float(scale[0]) == pytest.approx(1 / 0.6, rel=1e-4)
    assert 0.3 < dropped.double().mean() < 0.5
    lm.eval()
    torch.testing.assert_close(lm(ids, conditions=conditions)[0], plain(ids, conditions=conditions)[0], rtol=0, atol=0)


def test_a_conditioned_model_starts_from_its_condition():
    lm = model(num_layers=2, num_conditions=3)
    ids = torch.randint(4, 12, (2, 6))
    a, _ = lm(ids, conditions=torch.tensor([0, 1]))
    b, _ = lm(ids, conditions=torch.tensor([0, 2]))
    torch.testing.assert_close(a[0], b[0])
    assert not torch.allclose(a[1], b[1])
    start = lm.initial_state(2, torch.tensor([0, 1]))
    assert start.shape == (2, 2, 7)
    c, _ = lm(ids, state=start, conditions=torch.tensor([0, 1]))
    torch.testing.assert_close(a, c)  # without a state, the condition's embedding is the start state


def test_conditions_must_fit_the_model():
    with pytest.raises(ValueError, match="is conditioned; pass one condition per row"):
        model(num_conditions=3)(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="not conditioned"):
        model()(torch.ones(2, 3, dtype=torch.long), conditions=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="must have shape \\(2,\\)"):
        model(num_conditions=3)(torch.ones(2, 3, dtype=torch.long), conditions=torch.tensor([0]))


LOGITS = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))


def draws(count=4000, **options):
    generator = torch.Generator().manual_seed(0)
    picked = sample_next(LOGITS.expand(count, -1), generator=generator, **options)
    return torch.bincount(picked, minlength=4) / count


def test_sampling_follows_the_probabilities():
    torch.testing.assert_close(draws(20000), torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.015, rtol=0)


def test_temperature_sharpens_and_flattens():
    assert draws(temperature=0.3)[0] > 0.8
    assert draws(temperature=5.0)[3] > 0.15


def test_temperature_zero_takes_the_most_likely():
    logits = torch.randn(6, 9)
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(1))


def test_top_k_and_top_p_cut_the_tail():
    assert draws(top_k=2)[2:].sum() == 0
    assert draws(top_k=2)[1] == pytest.approx(0.375, abs=0.03)  # 0.3 / 0.8 after renormalising
    assert draws(top_p=0.7)[2:].sum() == 0  # 0.5 < 0.7 needs the second; 0.8 >= 0.7 stops there
    assert draws(top_p=0.81)[3] == 0 and draws(top_p=0.81)[2] > 0
    assert draws(top_p=0.1).tolist() == [1.0, 0.0, 0.0, 0.0]  # the most likely always stays


def test_the_same_seed_gives_the_same_draws():
    logits = torch.randn(50, 30)
    first = sample_next(logits, 0.8, 10, 0.9, torch.Generator().manual_seed(3))
    again = sample_next(logits, 0.8, 10, 0.9, torch.Generator().manual_seed(3))
    other = sample_next(logits, 0.8, 10, 0.9, torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.parametrize("conditioned", [False, True])
def test_one_character_at_inference_is_forward_to_the_bit(conditioned):
    """Generation reads one character a call: without autograd that runs the recurrence's one-call step
    (ElmanRNN.step), which must give what forward gives, bit for bit, or samples would change for a seed."""
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(vocab_size=12, hidden_size=24, num_layers=2,
                                              num_conditions=3 if conditioned else 0)).eval()
    conditions = torch.tensor([0, 2]) if conditioned else None
    ids = torch.randint(4, 12, (2, 6))
    state_step = state_forward = None
    for t in range(6):
        with torch.no_grad():
            logits_step, state_step = model(ids[:, t : t + 1], state_step, conditions=conditions)
        with torch.enable_grad():  # autograd wanted: forward
            logits_forward, state_forward = model(ids[:, t : t + 1], state_forward, conditions=conditions)
        assert torch.equal(logits_step, logits_forward.detach()) and torch.equal(state_step, state_forward.detach())
