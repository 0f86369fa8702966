import re

import pytest
import torch
from torch.nn import functional

from elman.models.classifier import ClassifierConfig, NgramBag, SequenceClassifier, hashed_ngrams


def model(**options):
    """A small classifier; without the n-gram generative member unless asked (it is counted, not trained)."""
    torch.manual_seed(0)
    return SequenceClassifier(ClassifierConfig(vocab_size=20, num_classes=4, embedding_dim=8, hidden_size=6,
                                               mlp_hidden=5, **{"generative_ngram_order": 0, **options})).eval()


@pytest.mark.parametrize("pooling", [("last",), ("max",), ("mean",), ("last", "max", "mean")])
@pytest.mark.parametrize("ngrams", [(), (2, 3)])
@pytest.mark.parametrize("bag_ngrams", [(), (1, 3)])
def test_logits_do_not_depend_on_padding_or_batch_neighbours(pooling, ngrams, bag_ngrams):
    classifier = model(pooling=pooling, ngrams=ngrams, bag_ngrams=bag_ngrams, bag_buckets=50)
    alone = torch.tensor([[2, 5, 6, 7, 3]])
    padded = torch.tensor([[2, 5, 6, 7, 3, 0, 0], [2, 9, 9, 9, 9, 9, 3]])
    expected = classifier(alone, torch.tensor([5]))
    torch.testing.assert_close(classifier(padded, torch.tensor([5, 7]))[:1], expected)


def test_training_mode_forward_and_backward_run_on_every_device(device):
    classifier = model(ngrams=(2, 3), bag_ngrams=(1, 3), bag_buckets=50, dropout=0.3).train().to(device)
    ids = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 6, 7, 3, 0, 0]], device=device)
    member_logits, lm_loss = classifier(ids, torch.tensor([5, 4]), lm_loss=True)
    assert member_logits.shape == (2, 2, 4) and member_logits.device.type == device and lm_loss > 0
    (member_logits.sum() + lm_loss).backward()  # the LM loss reaches the heads that predict the characters
    assert all(p.grad is not None and p.grad.isfinite().all() for p in classifier.parameters())
    classifier.eval()
    torch.testing.assert_close(classifier(ids, torch.tensor([5, 4])).cpu(),
                               classifier.cpu()(ids.cpu(), torch.tensor([5, 4])), rtol=1e-4, atol=1e-5)


def test_hashed_ngrams_are_deterministic_in_range_and_zero_on_padding():
    ids = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 6, 7, 3, 0, 0]])
    grams = hashed_ngrams(ids, 3, 100)
    assert torch.equal(grams, hashed_ngrams(ids, 3, 100))
    assert ((grams > 0) == (ids > 0)).all() and grams.max() < 100
    # the trigram ending at "7" after "5 6" differs from the one after "2 6"
    assert grams[0, 3] != grams[1, 2]
    # the same trigram (6, 7, 3) gets the same bucket wherever it is
    assert grams[0, 4] == grams[1, 3]


def test_config_rejects_unknown_pooling_and_unigram_ngrams():
    with pytest.raises(ValueError, match="pooling"):
        ClassifierConfig(vocab_size=5, num_classes=2, pooling=("median",))
    with pytest.raises(ValueError, match="orders >= 2"):
        ClassifierConfig(vocab_size=5, num_classes=2, ngrams=(1,))


def test_the_ensemble_predicts_the_normalised_geometric_mean_of_its_members_probabilities():
    classifier = model(members=3, bag_ngrams=(1, 2), bag_buckets=50)
    for parameter in classifier.bag.parameters():  # starts at zero; any weights will do here
        torch.nn.init.normal_(parameter)
    ids, lengths = torch.tensor([[2, 5, 6, 7, 3], [2, 9, 3, 0, 0]]), torch.tensor([5, 3])
    per_member = classifier(ids, lengths, per_member=True)
    assert per_member.shape == (4, 2, 4)  # 3 recurrent members and the bag
    probabilities = torch.stack([member(ids, lengths) for member in classifier.members]).softmax(2)
    geometric_mean = probabilities.prod(0) ** (1 / 4)
    torch.testing.assert_close(classifier(ids, lengths).exp(), geometric_mean / geometric_mean.sum(1, keepdim=True))
    assert not torch.allclose(per_member[0], per_member[1])  # members start from different weights
    pooled, states = classifier.features(ids, lengths)
    assert states.shape == (5, 2, 3 * 2 * 6) and pooled.shape[0] == 2


def test_ngram_bag_is_linear_in_the_text_ngrams_scaled_by_their_count():
    bag = NgramBag(ClassifierConfig(vocab_size=20, num_classes=2, bag_ngrams=(1, 2), bag_buckets=1000))
    torch.nn.init.normal_(bag.weights.weight)
    ids = torch.tensor([[2, 5, 3, 0]])
    grams = torch.cat([hashed_ngrams(ids, 1, 1000), hashed_ngrams(ids, 2, 1000)], 1)[0]
    grams = grams[grams != 0]
    expected = bag.weights.weight[grams].sum(0) / len(grams) ** 0.5 + bag.bias
    torch.testing.assert_close(bag(ids, torch.tensor([3]))[0], expected)


def test_ngram_bag_design_matrix_gives_the_same_logits_as_the_bag():
    bag = NgramBag(ClassifierConfig(vocab_size=20, num_classes=3, bag_ngrams=(1, 2, 3), bag_buckets=64))
    torch.nn.init.normal_(bag.weights.weight)
    torch.nn.init.normal_(bag.bias)
    ids = torch.tensor([[2, 5, 6, 5, 6, 3], [2, 7, 3, 0, 0, 0]])  # a repeated bigram; padding
    x = bag.design_matrix(ids)
    assert x.shape == (2, 64) and x.to_dense()[:, 0].eq(0).all()  # no text has the padding bucket
    torch.testing.assert_close(x @ bag.weights.weight + bag.bias, bag(ids, torch.tensor([6, 3])))


def test_config_rejects_no_members_zero_order_bags_and_a_negative_lm_loss_weight():
    with pytest.raises(ValueError, match="members"):
        ClassifierConfig(vocab_size=5, num_classes=2, members=0)
    with pytest.raises(ValueError, match="lm_loss_weight must be >= 0"):
        ClassifierConfig(vocab_size=5, num_classes=2, lm_loss_weight=-0.1)
    with pytest.raises(ValueError, match="orders >= 1"):
        ClassifierConfig(vocab_size=5, num_classes=2, bag_ngrams=(0, 2))


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_the_bottom_and_upper_layers_are_one_nn_rnn_stack(num_layers):
    member = model(num_layers=num_layers).recurrent[0]
    stack = torch.nn.RNN(8, 6, num_layers=num_layers, nonlinearity="relu", bidirectional=True)
    upper = {} if member.upper is None else member.upper.state_dict()
    stack.load_state_dict({**member.bottom.state_dict(),
                           **{re.sub(r"_l(\d+)", lambda m: f"_l{int(m.group(1)) + 1}", name): value
                              for name, value in upper.items()}})
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 9, 8, 7, 3]])
    bottom, top, final_states = member.recurrence(ids, torch.tensor([5, 5]))
    expected, h_n = stack(member.embedding(ids.t()))
    torch.testing.assert_close(top, expected)
    torch.testing.assert_close(final_states, h_n[-2:])
    first = torch.nn.RNN(8, 6, nonlinearity="relu", bidirectional=True)
    first.load_state_dict(member.bottom.state_dict())
    torch.testing.assert_close(bottom, first(member.embedding(ids.t()))[0])


def test_the_states_that_predict_a_character_have_not_read_it():
    """The language-model loss reads the bottom layer: there the forward direction at step t has read
    characters 0..t and the reverse direction t..end. Above it, every state has read every character."""
    member = model(num_layers=2).recurrent[0]
    ids = torch.tensor([[2, 5, 6, 7, 8, 3]])
    changed = ids.clone()
    changed[0, 3] = 9
    lengths = torch.tensor([6])
    bottom, top, _ = member.recurrence(ids, lengths)
    bottom_changed, top_changed, _ = member.recurrence(changed, lengths)
    assert torch.equal(bottom[:3, :, :6], bottom_changed[:3, :, :6])  # forward, steps 0..2 (predicting 1..3)
    assert torch.equal(bottom[4:, :, 6:], bottom_changed[4:, :, 6:])  # reverse, steps 4..5 (predicting 3..4)
    assert not torch.equal(bottom[3:, :, :6], bottom_changed[3:, :, :6])
    assert not torch.equal(top[:3, :, :6], top_changed[:3, :, :6])  # why the upper layers predict nothing


@pytest.mark.parametrize("bidirectional", [True, False])
def test_lm_loss_is_each_rows_mean_cross_entropy_of_the_neighbouring_characters(bidirectional):
    classifier = model(num_layers=2, bidirectional=bidirectional, dropout=0.0, weight_dropout=0.0,
                       lm_loss_weight=0.7).train()
    member = classifier.recurrent[0]
    ids = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 6, 3, 0, 0, 0], [2, 9, 8, 7, 6, 3]])
    lengths = torch.tensor([5, 3, 6])
    bottom, _, _ = member.recurrence(ids, lengths)
    expected = 0.0
    for row, length in enumerate(lengths.tolist()):
        following = [functional.cross_entropy(member.neighbours[0](bottom[t, row, :6]), ids[row, t + 1])
                     for t in range(length - 1)]
        expected += 0.7 * sum(following) / len(following)
        if bidirectional:
            preceding = [functional.cross_entropy(member.neighbours[1](bottom[t, row, 6:]), ids[row, t - 1])
                         for t in range(1, length)]
            expected += 0.7 * sum(preceding) / len(preceding)
    member_logits, lm_loss = classifier(ids, lengths, lm_loss=True)
    torch.testing.assert_close(lm_loss, expected)
    torch.testing.assert_close(member_logits, classifier(ids, lengths, per_member=True))


def test_without_lm_loss_there_are_no_character_heads_and_the_loss_is_zero():
    classifier = model(lm_loss_weight=0.0).train()
    assert not any("neighbours" in name for name in classifier.state_dict())
    _, lm_loss = classifier(torch.tensor([[2, 5, 6, 3]]), torch.tensor([4]), lm_loss=True)
    assert lm_loss == 0


def test_the_generative_member_scores_each_class_by_bayes_rule_in_float64():
    """Its logits are log p(text | c) + prior_weight log p(c), each text read on its own under each class."""
    classifier = model(generative_hidden_size=7, bag_ngrams=()).double()
    generative = classifier.generative
    generative.log_prior.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]).log())
    generative.prior_weight.fill_(0.7)
    ids = torch.tensor([[2, 5, 6, 7, 3, 0, 0], [2, 9, 8, 9, 8, 9, 3], [2, 4, 3, 0, 0, 0, 0]])
    lengths = torch.tensor([5, 7, 3])
    expected = torch.empty(3, 4, dtype=torch.float64)
    for row in range(3):
        text = ids[row : row + 1, : int(lengths[row])]
        for c in range(4):
            logits, _ = generative.language_model(text[:, :-1], conditions=torch.tensor([c]))
            log_likelihood = logits[0].log_softmax(1).gather(1, text[0, 1:, None]).sum()
            expected[row, c] = log_likelihood + 0.7 * generative.log_prior[c]
    torch.testing.assert_close(generative(ids, lengths), expected)
    members = classifier(ids, lengths, per_member=True)
    assert members.shape == (2, 3, 4)  # the recurrent member, then the generative one
    torch.testing.assert_close(members[-1], expected.float())


def test_the_generative_member_trains_on_its_language_model_loss_under_the_true_class():
    classifier = model(generative_hidden_size=7, lm_loss_weight=0.0, bag_ngrams=()).train()
    ids = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 6, 7, 3, 0, 0]])
    lengths, targets = torch.tensor([5, 4]), torch.tensor([1, 3])
    with pytest.raises(ValueError, match="needs the targets"):
        classifier(ids, lengths, lm_loss=True)
    member_logits, loss = classifier(ids, lengths, lm_loss=True, targets=targets)
    assert member_logits.shape == (1, 2, 4)  # a step scores every member but the generative one
    language_model = classifier.generative.language_model
    classifier.eval()  # no dropout: the loss computed again below draws none
    _, loss = classifier(ids, lengths, lm_loss=True, targets=targets)
    expected = 0.0
    for row in range(2):
        text = ids[row : row + 1, : int(lengths[row])]
        logits, _ = language_model(text[:, :-1], conditions=targets[row : row + 1])
        expected += functional.cross_entropy(logits[0], text[0, 1:])  # mean over the row's tokens
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in language_model.parameters())
    assert all(p.grad is None for p in classifier.recurrent.parameters())  # its loss is its own


def test_a_character_no_training_text_held_speaks_for_no_class():
    """A class of few texts leaves its model more probability for unseen characters than a large class does;
    counted, an <unk> would pull every name toward the small classes."""
    classifier = model(generative_ngram_order=2)
    member = classifier.ngram_generative
    small = [[2, 5, 6, 3]] * 2  # class 0: two texts
    large = [[2, *row, 3] for row in ([7, 8, 9], [8, 9, 10], [7, 10, 11], [9, 11, 12], [12, 7, 8])] * 8  # class 1
    member.fit(torch.tensor([row + [0] * (5 - len(row)) for row in small + large]),
               torch.tensor([len(row) for row in small + large]), torch.tensor([0] * 2 + [1] * 40))
    unknown = torch.tensor([[2, 1, 3]])  # <bos> <unk> <eos>
    lengths = torch.tensor([3])
    counted = member.ngrams.token_log_likelihoods(unknown, lengths)[0, 0]
    assert counted[0] > counted[1] + 1.0  # the language model itself: more for <unk> under the small class
    evidence = member.evidence(unknown, lengths)[0]
    assert evidence[0].eq(0).all() and evidence[1].equal(member.ngrams.token_log_likelihoods(unknown, lengths)[0, 1])
    torch.testing.assert_close(member.log_likelihoods(unknown, lengths), evidence.sum(0, keepdim=True))
    torch.testing.assert_close(member.token_log_likelihoods(unknown, lengths, torch.tensor([1])),
                               evidence[:, 1].unsqueeze(0))
