import pytest
import torch

from elman.models.classifier import ClassifierConfig, NgramBag, SequenceClassifier, hashed_ngrams


def model(**options):
    torch.manual_seed(0)
    return SequenceClassifier(ClassifierConfig(vocab_size=20, num_classes=4, embedding_dim=8, hidden_size=6,
                                               mlp_hidden=5, **options)).eval()


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
    logits = classifier(ids, torch.tensor([5, 4]))
    assert logits.shape == (2, 4) and logits.device.type == device
    logits.sum().backward()
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


def test_config_rejects_no_members_and_zero_order_bags():
    with pytest.raises(ValueError, match="members"):
        ClassifierConfig(vocab_size=5, num_classes=2, members=0)
    with pytest.raises(ValueError, match="orders >= 1"):
        ClassifierConfig(vocab_size=5, num_classes=2, bag_ngrams=(0, 2))
