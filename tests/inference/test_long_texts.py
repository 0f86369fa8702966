"""Texts longer than training's max_length are read whole by every surface that classifies them: never cut
silently. (Training cut its texts to max_length; the network itself has no fixed length.) The HTTP API's
test is in tests/serve/test_api.py, beside its server."""

import json

import pytest
import torch

import elman
from elman.data.vocabulary import vectorize

STEM = "Nakamotovichsonandez"


def long_text(length: int) -> str:
    return (STEM * (length // len(STEM) + 1))[:length].capitalize()


def whole_text_log_probabilities(classifier, text: str) -> torch.Tensor:
    """What the model gives for the text read whole, computed by hand."""
    ids, lengths = vectorize([text], classifier.vocabulary, None)
    with torch.no_grad():
        return torch.log_softmax(classifier.model.eval()(ids, lengths), dim=1)[0]


def whole_text_probabilities(classifier, text: str) -> torch.Tensor:
    return whole_text_log_probabilities(classifier, text).exp()


@pytest.fixture(scope="module")
def classifier(trained_model):
    loaded = elman.load(trained_model[0])
    assert loaded.max_length < 100  # the texts below are longer than training's
    return loaded


def test_predict_reads_a_500_character_text_whole(classifier):
    text = long_text(500)
    expected = whole_text_probabilities(classifier, text)
    torch.testing.assert_close(classifier.probabilities(text)[0], expected)
    # so the check above could tell reading from cutting (in logarithms: the generative member's evidence grows
    # with the text, and both texts' probabilities are nearly 0 or 1)
    cut = whole_text_log_probabilities(classifier, text[: classifier.max_length - 2])
    assert not torch.allclose(whole_text_log_probabilities(classifier, text), cut, atol=1e-2)
    [prediction] = classifier.predict(text, top_k=1)
    assert prediction.text == text
    assert prediction.labels[0][1] == pytest.approx(float(expected.max()), abs=1e-6)


def test_inspect_has_a_row_for_every_character_and_refuses_beyond_its_limit(classifier):
    from elman.inference.classifier import MAX_INSPECT_CHARS

    text = long_text(500)
    inspection = classifier.inspect(text)
    assert inspection.characters == list(text) and len(inspection.probabilities) == 500
    last_prefix = torch.from_numpy(inspection.probabilities[-1])
    torch.testing.assert_close(last_prefix, whole_text_probabilities(classifier, text))
    with pytest.raises(ValueError, match=f"at most {MAX_INSPECT_CHARS}"):
        classifier.inspect(long_text(MAX_INSPECT_CHARS + 1))


def test_cli_predict_json_and_csv_read_a_500_character_text_whole(cli, classifier, trained_model, tmp_path):
    text = long_text(500)
    expected = float(whole_text_probabilities(classifier, text).max())
    run = cli("predict", "--model", trained_model[0], text, "--json", "--top-k", "1")
    assert run.returncode == 0, run.stderr
    [entry] = json.loads(run.stdout)
    assert entry["text"] == text and entry["labels"][0]["probability"] == pytest.approx(expected, abs=1e-6)
    names, output = tmp_path / "names.csv", tmp_path / "predictions.csv"
    names.write_text(f"surname\n{text}\n", encoding="utf-8")
    run = cli("predict", "--model", trained_model[0], "--input", names, "--output", output)
    assert run.returncode == 0, run.stderr
    assert text in output.read_text(encoding="utf-8")
