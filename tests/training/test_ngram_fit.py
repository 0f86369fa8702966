"""The n-gram member's logistic-regression fit: it reaches the optimum, walks the penalty path as documented,
and training keeps the fitted member as it is."""

import re

import pytest
import torch
from safetensors.torch import load_file

from elman.data import read_labelled_csv
from elman.data.classification import prepare
from elman.models.classifier import ClassifierConfig, NgramBag
from elman.threads import torch_threads
from elman.training.classify import TrainConfig, class_weights, selection_score
from elman.training.ngram_fit import L2_PATH, fit_ngram_bag


def problem(seed=0, rows=80):
    """Texts whose class shows in one of their characters, with noise characters around it."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 3, (rows,), generator=generator)
    ids = torch.randint(4, 12, (rows, 6), generator=generator)
    ids[:, 2] = 12 + targets
    ids[:, 0], ids[:, -1] = 2, 3
    return ids, targets


def bag():
    return NgramBag(ClassifierConfig(vocab_size=16, num_classes=3, bag_ngrams=(1, 2), bag_buckets=128))


def test_the_fit_is_the_minimum_of_the_penalised_weighted_loss():
    member, (ids, targets) = bag(), problem()
    weights = class_weights(targets, 3, "sqrt")
    fit = fit_ngram_bag(member, (ids, targets), problem(1), weights,
                        lambda logits, t: float((logits.argmax(1) == t).float().mean()))
    parameters = [member.weights.weight, member.bias]

    def gradient_norm():
        loss = torch.nn.functional.cross_entropy(member(ids, None), targets, weight=weights) \
            + fit["l2"] * member.weights.weight.square().sum()
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, parameters)]).norm()

    at_fit = gradient_norm()
    with torch.no_grad():
        for parameter in parameters:
            parameter.zero_()
    assert at_fit < 1e-3 * gradient_norm()  # the optimality condition, against the start
    assert fit["val_score"] == 1.0  # the class is in the text: validation is all right


def test_the_path_stops_when_validation_falls_and_keeps_the_best_penalty():
    member, scores, seen = bag(), iter([0.2, 0.5, 0.4, 0.9]), []

    def score(logits, targets):
        seen.append(logits.clone())
        return next(scores)

    val = problem(1)
    fit = fit_ngram_bag(member, problem(), val, None, score)
    assert [l2 for l2, _ in fit["path"]] == list(L2_PATH[:3])  # stopped at the first fall
    assert fit["l2"] == L2_PATH[1] and fit["val_score"] == 0.5
    with torch.no_grad():  # the member holds the kept fit
        torch.testing.assert_close(member(val[0], None), seen[1])


def test_training_keeps_the_fitted_member_unchanged_and_refits_it_on_train_and_val(names_csv, trained_model):
    """Selection fits the member on train, choosing the penalty on val; the final model's member is fitted
    on train + val with that penalty; the recurrent members' steps leave it as fitted."""
    out, metrics = trained_model
    fit, refit_fit = metrics["ngram_member_fit"], metrics["refit"]["ngram_member_fit"]
    assert fit["l2"] in L2_PATH and fit["seconds"] > 0
    assert refit_fit["l2"] == fit["l2"] and refit_fit["path"] == [[fit["l2"], None]]
    config = TrainConfig(epochs=15, batch_size=16, learning_rate=1e-2)  # as trained_model was trained
    prepared = prepare(read_labelled_csv(names_csv), config.max_length, config.seed)
    train, val = prepared.splits["train"], prepared.splits["val"]
    member = NgramBag(ClassifierConfig(len(prepared.vocabulary), len(prepared.labels)))
    # the same bits need the same threads: the run took the cores free when it started
    threads = int(re.search(r"threads: (\d+)", (out / "train.log").read_text()).group(1))
    with torch_threads(threads):
        again = fit_ngram_bag(member, (train.ids, train.targets), (val.ids, val.targets),
                              class_weights(train.targets, len(prepared.labels), config.bag_class_weighting),
                              lambda logits, targets: selection_score(logits, targets, prepared.labels, config))
        assert again["path"] == fit["path"]
        both = torch.cat([train.ids, val.ids]), torch.cat([train.targets, val.targets])
        fit_ngram_bag(member, both, None, class_weights(both[1], len(prepared.labels), config.bag_class_weighting),
                      None, penalties=(fit["l2"],))
    saved = load_file(out / "model.safetensors")
    assert saved["bag.weights.weight"].abs().sum() > 0
    torch.testing.assert_close(saved["bag.weights.weight"], member.weights.weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(saved["bag.bias"], member.bias.detach(), rtol=0, atol=0)


def test_a_fit_without_validation_takes_one_penalty():
    with pytest.raises(ValueError, match="without validation rows give one penalty"):
        fit_ngram_bag(bag(), problem(), None, None, None, penalties=L2_PATH)


def test_the_fit_stops_when_time_is_up_and_keeps_what_it_has():
    member, looks = bag(), []

    def time_is_up():
        looks.append(True)
        return len(looks) >= 2  # up at the second look, after two rounds of iterations

    val = problem(1)
    fit = fit_ngram_bag(member, problem(), val, None, lambda logits, targets: 0.5, time_is_up)
    assert [l2 for l2, _ in fit["path"]] == [L2_PATH[0]] and fit["l2"] == L2_PATH[0]
    with torch.no_grad():
        assert member(val[0], None).abs().sum() > 0  # fitted as far as it went
