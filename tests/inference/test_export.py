"""Trained models as ONNX: exported, checked in onnxruntime, refused where they would differ."""

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import elman
from elman.cli import main
from elman.data.vocabulary import vectorize
from elman.inference import export


def run_onnx(path, **inputs):
    session = onnxruntime.InferenceSession(str(path))
    return session.run(None, {name: value.numpy() for name, value in inputs.items()})


@pytest.mark.parametrize("fixture", ["trained_model", "generative_model"])
def test_exported_classifier_gives_the_models_probabilities(fixture, request, tmp_path):
    """The generative member too: each text read once per class inside the graph."""
    directory, _ = request.getfixturevalue(fixture)
    classifier = elman.load(directory)
    bias = classifier.model.decision_bias  # 0 after training on these easy names: the graph must carry one
    bias.copy_(torch.linspace(-1, 1, len(bias)))
    report = export.export_onnx(classifier, tmp_path / "classifier.onnx")
    assert report.inputs == ["ids", "lengths"] and report.rnn_nodes >= 1 and report.max_difference < 1e-5
    texts = ["Nakamoto", "Ivanov", "Gomez", "Li", "Abcdefghijklmnop"]  # another batch and length than traced
    ids, lengths = vectorize(texts, classifier.vocabulary, classifier.max_length)
    [probabilities] = run_onnx(report.path, ids=ids, lengths=lengths)
    np.testing.assert_allclose(probabilities, classifier.probabilities(texts).numpy(), atol=1e-5)
    metadata = json.loads({p.key: p.value for p in onnx.load(report.path).metadata_props}["elman"])
    assert metadata["task"] == "classify" and metadata["labels"] == classifier.labels


def test_a_torch_without_is_exporting_exports_the_n_gram_member_too(trained_model, tmp_path, monkeypatch):
    """Before torch 2.6 there is no ``torch.compiler.is_exporting``: anything compiled takes the search that
    ONNX can run (searchsorted would fail the export)."""
    from elman.models import ngram_language_model

    monkeypatch.setattr(ngram_language_model, "exporting", torch.compiler.is_compiling)
    classifier = elman.load(trained_model[0])
    assert classifier.model.ngram_generative is not None
    assert export.export_onnx(classifier, tmp_path / "classifier.onnx").max_difference < 1e-5


def test_exported_language_model_streams_state(trained_lm, tmp_path):
    directory, _ = trained_lm
    generator = elman.load(directory)
    path = export.export_onnx(generator, tmp_path / "lm.onnx").path
    ids = torch.randint(1, len(generator.vocabulary), (2, 23))
    state = torch.zeros(generator.model.config.num_layers, 2, generator.model.config.hidden_size)
    first, carried = run_onnx(path, ids=ids[:, :10], state=state)
    second, final = run_onnx(path, ids=ids[:, 10:], state=torch.from_numpy(carried))
    with torch.no_grad():
        logits, expected_state = generator.model(ids, state)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(final, expected_state.numpy(), atol=1e-5)


def test_exported_conditioned_language_model_starts_from_the_condition(conditioned_lm, tmp_path):
    directory, _ = conditioned_lm
    generator = elman.load(directory)
    path = export.export_onnx(generator, tmp_path / "names.onnx").path
    ids, conditions = torch.randint(1, len(generator.vocabulary), (3, 6)), torch.tensor([0, 2, 1])
    logits, state = run_onnx(path, ids=ids, conditions=conditions)
    with torch.no_grad():
        expected_logits, expected_state = generator.model(ids, conditions=conditions)
    np.testing.assert_allclose(logits, expected_logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(state, expected_state.numpy(), atol=1e-5)


def test_an_export_that_differs_is_refused_and_nothing_is_written(trained_model, tmp_path, monkeypatch):
    directory, _ = trained_model
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no graph can pass: the refusal path itself
    with pytest.raises(ValueError, match="differs from the model by .* nothing was written"):
        export.export_onnx(elman.load(directory), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_cli_export_prints_the_parity_check(trained_model, tmp_path, capsys):
    directory, _ = trained_model
    assert main(["export", "--model", str(directory), "--out", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "ONNX RNN node" in out and "parity with the model in onnxruntime" in out and "-> ok" in out
    assert main(["export", "--model", str(directory), "--out", str(tmp_path / "missing" / "m.onnx")]) == 2
    assert "there is no directory" in capsys.readouterr().err
