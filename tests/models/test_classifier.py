import pytest
import torch

from elman.models.classifier import ClassifierConfig, SequenceClassifier, hashed_ngrams


def model(**options):
    torch.manual_seed(0)
    return SequenceClassifier(ClassifierConfig(vocab_size=20, num_classes=4, embedding_dim=8, hidden_size=6,
                                               mlp_hidden=5, **options)).eval()


@pytest.mark.parametrize("pooling", [("last",), ("max",), ("mean",), ("last", "max", "mean")])
@pytest.mark.parametrize("ngrams", [(), (2, 3)])
def test_logits_do_not_depend_on_padding_or_batch_neighbours(pooling, ngrams):
    classifier = model(pooling=pooling, ngrams=ngrams)
    alone = torch.tensor([[2, 5, 6, 7, 3]])
    padded = torch.tensor([[2, 5, 6, 7, 3, 0, 0], [2, 9, 9, 9, 9, 9, 3]])
    expected = classifier(alone, torch.tensor([5]))
    torch.testing.assert_close(classifier(padded, torch.tensor([5, 7]))[:1], expected)


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
