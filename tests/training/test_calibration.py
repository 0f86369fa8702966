"""Temperature calibration: the fit against a brute-force search, the held-out data, and the folded model."""

import json
import random

import pytest
import torch
from torch import nn

import elman
from elman.data.language import MIN_CALIBRATION_CHARACTERS, prepare_lines, prepare_text
from elman.data.reader import LabelledTexts
from elman.models.language_model import LanguageModel, LanguageModelConfig, line_loss, stream_loss
from elman.training.calibration import calibrate, fit_temperature, held_out_logits
from elman.training.language import LanguageTrainConfig, read_language_data, train_language_model


def mean_loss(logits, targets, temperature):
    return float(nn.functional.cross_entropy(logits.double() / temperature, targets))


@pytest.mark.parametrize("true_temperature", [0.6, 1.0, 1.7])
def test_the_fitted_temperature_recovers_the_one_the_targets_were_drawn_at(true_temperature):
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(20000, 12, generator=generator, dtype=torch.float64)
    targets = torch.multinomial((logits / true_temperature).softmax(-1), 1, generator=generator)[:, 0]
    fitted = fit_temperature(logits, targets)
    assert fitted == pytest.approx(true_temperature, rel=0.03)
    grid = torch.linspace(fitted - 0.1, fitted + 0.1, 201, dtype=torch.float64)  # brute force, steps of 0.001
    best = float(grid[torch.tensor([mean_loss(logits, targets, t) for t in grid]).argmin()])
    assert fitted == pytest.approx(best, abs=1.5e-3)
    assert mean_loss(logits, targets, fitted) <= mean_loss(logits, targets, 1.0)


def test_a_fit_on_nothing_is_refused():
    with pytest.raises(ValueError, match="no held-out characters"):
        fit_temperature(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))


def small_model(conditions: int = 0) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(LanguageModelConfig(vocab_size=9, embedding_dim=6, hidden_size=10, num_layers=2,
                                             num_conditions=conditions))


def test_held_out_text_logits_equal_one_long_forward_pass():
    model, ids = small_model(), torch.randint(1, 9, (300,), generator=torch.Generator().manual_seed(1))
    logits, targets = held_out_logits(model, "text", (ids,), chunk_length=7)
    with torch.no_grad():
        whole, _ = model(ids[None, :-1])
    torch.testing.assert_close(logits, whole[0])
    assert torch.equal(targets, ids[1:])
    assert float(nn.functional.cross_entropy(logits, targets)) == pytest.approx(stream_loss(model, ids), rel=1e-5)


def test_held_out_line_logits_score_every_character_and_end_once():
    model = small_model(conditions=2)
    lengths = torch.tensor([5, 3, 6])
    ids = torch.zeros(3, 6, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.tensor([2, *range(4, 4 + int(length) - 2), 3])  # <bos> chars <eos>
    conditions = torch.tensor([0, 1, 1])
    logits, targets = held_out_logits(model, "lines", (ids, lengths, conditions))
    assert logits.shape == (int((lengths - 1).sum()), 9) and int((targets == 3).sum()) == 3
    assert float(nn.functional.cross_entropy(logits, targets)) == pytest.approx(
        line_loss(model, ids, lengths, conditions), rel=1e-5)


def test_calibrating_folds_the_temperature_into_the_output_layer():
    model, ids = small_model(), torch.randint(1, 9, (400,), generator=torch.Generator().manual_seed(2))
    before, targets = held_out_logits(model, "text", (ids,))
    report = calibrate(model, "text", (ids,))
    after, _ = held_out_logits(model, "text", (ids,))
    torch.testing.assert_close(after, before / report["temperature"])
    assert report["characters"] == 399 and report["loss_after"] <= report["loss_before"]
    assert report["loss_after"] == pytest.approx(stream_loss(model, ids), rel=1e-5)


def test_a_long_text_holds_out_its_start_for_calibration():
    text = "".join(random.Random(0).choice("abcdefgh \n") for _ in range(100_000))
    data = prepare_text(text, val_fraction=0.1, calibration_fraction=0.02)
    vocabulary = data.vocabulary
    decode = lambda ids: "".join(vocabulary.tokens[int(i)] for i in ids)  # noqa: E731
    assert decode(data.calibration[0]) == text[:1800]
    assert decode(data.train[0]) == text[1800:90_000] and decode(data.val[0]) == text[90_000:]
    assert prepare_text(text, calibration_fraction=0.0).calibration is None
    short = text[: MIN_CALIBRATION_CHARACTERS * 10]  # 2% of its 90% is too little to fit on
    assert prepare_text(short, calibration_fraction=0.02).calibration is None


def lines(count_per_label: int) -> LabelledTexts:
    rng, texts = random.Random(3), {}  # distinct texts, in the order drawn
    while len(texts) < 3 * count_per_label:
        texts["".join(rng.choice("abcdefgh") for _ in range(rng.randint(4, 10)))] = None
    texts = list(texts)
    labels = [label for label in ("x", "y", "z") for _ in range(count_per_label)]
    return LabelledTexts("lines.csv", texts, labels, None, 0, "text", "label", None)


def test_lines_hold_out_a_share_of_each_label_for_calibration():
    source = lines(2000)
    data = prepare_lines(source, conditioned=True, val_fraction=0.1, calibration_fraction=0.05, seed=4)
    train_ids, _, train_conditions = data.train
    calibration_ids, calibration_lengths, calibration_conditions = data.calibration
    assert torch.bincount(calibration_conditions).tolist() == [90, 90, 90]  # 5% of each label's 1,800
    assert torch.bincount(train_conditions).tolist() == [1710, 1710, 1710]
    decoded = lambda ids: {data.vocabulary.decode(row) for row in ids}  # noqa: E731
    assert not decoded(train_ids) & decoded(calibration_ids)
    again = prepare_lines(source, conditioned=True, val_fraction=0.1, calibration_fraction=0.05, seed=4)
    assert torch.equal(again.calibration[0], calibration_ids)
    assert int(calibration_lengths.sum()) - 270 >= MIN_CALIBRATION_CHARACTERS  # characters and ends
    few = prepare_lines(lines(40), conditioned=True, calibration_fraction=0.05)
    assert few.calibration is None and torch.bincount(few.train[2]).tolist() == [36, 36, 36]


def test_a_bad_calibration_fraction_is_refused():
    with pytest.raises(ValueError, match="calibration_fraction"):
        prepare_text("abc" * 1000, calibration_fraction=0.7)


def test_training_calibrates_the_kept_model_and_saves_it(story_txt, tmp_path):
    config = LanguageTrainConfig(epochs=3, batch_size=8, chunk_length=16, learning_rate=1e-2,
                                 calibration_fraction=0.2)
    data = read_language_data(story_txt, config)
    assert data.calibration is not None
    metrics = train_language_model(data, tmp_path, {"embedding_dim": 8, "hidden_size": 16, "num_layers": 1}, config,
                                   progress=False)
    calibration = metrics["calibration"]
    assert calibration["characters"] == data.calibration[0].shape[0] - 1
    assert calibration["loss_after"] <= calibration["loss_before"]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["calibration"]["temperature"] == pytest.approx(calibration["temperature"])
    loaded = elman.load(tmp_path).model  # the calibrated model is the one saved
    assert stream_loss(loaded, data.val[0]) == pytest.approx(metrics["val"]["loss"], rel=1e-6)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["calibration"]["val_loss_before"] == pytest.approx(calibration["val_loss_before"])
    assert "calibration: temperature" in (tmp_path / "train.log").read_text()


def test_an_interrupted_run_still_keeps_and_calibrates_its_best_model(story_txt, tmp_path, monkeypatch):
    config = LanguageTrainConfig(epochs=50, batch_size=8, chunk_length=16, learning_rate=1e-2,
                                 calibration_fraction=0.2)
    data = read_language_data(story_txt, config)
    steps = []
    schedule = elman.training.language.warmup_stable_decay

    def interrupt_at_step_40(*args):  # Ctrl-C arrives within the first epoch, before any validation
        steps.append(None)
        if len(steps) == 40:
            raise KeyboardInterrupt
        return schedule(*args)

    monkeypatch.setattr(elman.training.language, "warmup_stable_decay", interrupt_at_step_40)
    metrics = train_language_model(data, tmp_path, {"embedding_dim": 8, "hidden_size": 16, "num_layers": 1}, config,
                                   progress=False)
    assert metrics["stopped_by"] == "interrupt" and metrics["steps"] == 39
    assert metrics["history"][-1]["step"] == 39  # the steps since the last validation are validated
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["calibration"]["temperature"] == pytest.approx(metrics["calibration"]["temperature"])
    assert stream_loss(elman.load(tmp_path).model, data.val[0]) == pytest.approx(metrics["val"]["loss"], rel=1e-6)
    assert "stopped by interrupt after" in (tmp_path / "train.log").read_text()


def test_an_interrupt_before_the_first_step_goes_on_up_with_nothing_to_keep(story_txt, tmp_path, monkeypatch):
    config = LanguageTrainConfig(epochs=2, batch_size=8, chunk_length=16)
    data = read_language_data(story_txt, config)

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(elman.training.language, "warmup_stable_decay", interrupt)
    with pytest.raises(KeyboardInterrupt):  # the command line then says "interrupted" (exit 130)
        train_language_model(data, tmp_path, {"embedding_dim": 8, "hidden_size": 16, "num_layers": 1}, config,
                             progress=False)
    assert not (tmp_path / "metrics.json").exists()
