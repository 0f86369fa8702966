"""A conditioned language model of lines read as a classifier by Bayes' rule: p(c | text) ∝ p(text | c) p(c)."""

import json

import pytest
import torch

import elman
from elman.checkpoint import load_checkpoint, save_checkpoint
from elman.data import read_labelled_csv
from elman.errors import UsageError


def test_a_conditioned_line_model_classifies_held_out_names(conditioned_lm, names_csv):
    generator = elman.load(conditioned_lm[0])
    texts, labels = read_labelled_csv(names_csv).subset("test")
    predictions = generator.classify(texts, top_k=3)
    assert [p.text for p in predictions] == texts
    for prediction in predictions:
        probabilities = [p for _, p in prediction.labels]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1, abs=1e-5)
    accuracy = sum(p.labels[0][0] == label for p, label in zip(predictions, labels, strict=True)) / len(labels)
    assert accuracy > 0.8  # endings decide the class, and the model has learnt them per class


def test_the_prior_is_the_training_lines_frequencies_or_uniform(conditioned_lm):
    generator = elman.load(conditioned_lm[0])
    assert generator.config["condition_counts"] == [40, 40, 40]  # names_csv's training rows per class
    uniform = generator.classify(["Tanaka"], top_k=3, prior="uniform")[0]
    generator.config = {**generator.config, "condition_counts": [1, 1, 98]}
    skewed = generator.classify(["Tanaka"], top_k=3)[0]
    prior = torch.tensor([1.0, 1.0, 98.0]) / 100
    expected = torch.tensor([dict(uniform.labels)[c] for c in generator.conditions]) * prior
    expected /= expected.sum()
    torch.testing.assert_close(torch.tensor([dict(skewed.labels)[c] for c in generator.conditions]), expected)
    with pytest.raises(UsageError, match="prior must be"):
        generator.classify(["Tanaka"], prior="flat")


def test_what_cannot_classify_is_refused_with_the_reason(conditioned_lm, trained_lm, tmp_path):
    with pytest.raises(UsageError, match="only a conditioned model of lines"):
        elman.load(trained_lm[0]).classify(["the cat"])
    generator = elman.load(conditioned_lm[0])
    with pytest.raises(UsageError, match="never saw"):
        generator.classify(["Tanaka§"])
    with pytest.raises(UsageError, match="empty"):
        generator.classify([""])
    config, state, vocabulary = load_checkpoint(conditioned_lm[0])  # as saved before the counts were kept
    kept = {key: value for key, value in config.items() if key not in ("condition_counts", "sha256")}
    save_checkpoint(tmp_path, generator.model, vocabulary, kept)
    old = elman.load(tmp_path)
    with pytest.raises(UsageError, match="--uniform-prior"):
        old.classify(["Tanaka"])
    uniform = generator.classify(["Tanaka"], prior="uniform")[0].labels
    assert old.classify(["Tanaka"], prior="uniform")[0].labels == uniform


def test_elman_predict_takes_a_conditioned_language_model(cli, conditioned_lm, trained_model):
    done = cli("predict", "--model", conditioned_lm[0], "Tamamoto", "Petrenko", "--json", "--uniform-prior")
    assert done.returncode == 0, done.stderr
    assert [p["labels"][0]["label"] for p in json.loads(done.stdout)] == ["Japanese", "Slavic"]
    refused = cli("predict", "--model", trained_model[0], "Yamamoto", "--uniform-prior")
    assert refused.returncode == 2 and "--uniform-prior is for a conditioned language model" in refused.stderr
    assert "Traceback" not in refused.stderr
