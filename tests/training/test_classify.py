"""End to end on a generated CSV: train, outputs on disk, evaluate, predict, checkpoint safety."""

import ast
import itertools
import json
import math
import pickle
import re
import types

import pytest
import torch

import elman
from elman.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from elman.data import read_labelled_csv
from elman.data.classification import Split
from elman.data.vocabulary import vectorize
from elman.layer import ElmanRNN
from elman.metrics import classification_metrics
from elman.models import ClassifierConfig, SequenceClassifier
from elman.models.classifier import ensemble
from elman.models.language_model import condition_log_likelihoods
from elman.training.classify import TrainConfig, class_weights, train_classifier
from elman.training.pool_fit import MAX_LOG_WEIGHT, choose_decision_bias, expected_score, fit_member_weights


def test_training_writes_every_output_and_learns(trained_model):
    out, metrics = trained_model
    for name in ("model.safetensors", "vocab.json", "config.json", "metrics.json", "curves.png", "confusion.png",
                 "train.log"):
        assert (out / name).is_file(), name
    assert metrics["test"]["accuracy"] > 0.8  # endings make the three classes easy
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["test"]) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix"}
    assert sum(map(sum, saved["test"]["confusion_matrix"])) == saved["test"]["n"] == 30
    assert not list(out.glob(".*.tmp"))


def test_the_final_model_is_trained_afresh_on_train_and_val_as_long_as_selection_ran(trained_model, names_csv):
    out, metrics = trained_model
    data = read_labelled_csv(names_csv)
    rows = sum(split in ("train", "val") for split in data.splits)
    refit = metrics["refit"]
    assert refit["rows"] == rows and refit["stopped_by"] == "epochs"
    assert refit["epochs"] == metrics["epochs_run"] and refit["steps"] == metrics["epochs_run"] * math.ceil(rows / 16)
    assert 1 <= metrics["selected_epoch"] <= metrics["epochs_run"]
    # the validation scores are the selected model's, as logged when it was selected (before its decisions
    # were biased)
    selected = metrics["history"][metrics["selected_epoch"] - 1]
    unbiased = metrics["decision_bias"]["unbiased_val"]
    assert (unbiased["accuracy"], unbiased["macro_f1"]) == (selected["val_accuracy"], selected["val_macro_f1"])
    # the final model pools its members with the weights fitted on validation in selection
    final = elman.load(out).model
    assert json.loads((out / "config.json").read_text())["refit"] is True
    log = (out / "train.log").read_text()
    assert f"final model: trained afresh on train + val ({rows} rows) for {metrics['epochs_run']} epochs" in log
    assert final.member_weights.ne(1.0 / len(final.members)).all()


def test_loaded_model_predicts_ranked_labels_with_probabilities(trained_model):
    out, _ = trained_model
    classifier = elman.load(out)
    [prediction] = classifier.predict(["Petrenko"], top_k=3)
    probabilities = [p for _, p in prediction.labels]
    assert prediction.labels[0][0] == "Slavic"
    assert probabilities == sorted(probabilities, reverse=True) and abs(sum(probabilities) - 1) < 1e-5
    torch.testing.assert_close(classifier.probabilities(["Yamamoto", "Gonzalez"]).sum(1), torch.ones(2))


@pytest.mark.parametrize("texts,error,message", [("   ", ValueError, "text 0 is empty"), ([3], TypeError, "is a int"),
                                                 ("x" * 20_000, ValueError, "the limit is")])
def test_predict_refuses_bad_texts(trained_model, texts, error, message):
    with pytest.raises(error, match=message):
        elman.load(trained_model[0]).predict(texts)


def test_unknown_characters_are_classified_through_unk_and_named(trained_model):
    classifier = elman.load(trained_model[0])
    odd, same, plain = classifier.predict(["Ωmega☃", "☃megaΩ", "Sato"])
    assert odd.unknown_characters == ["Ω", "☃"] and same.unknown_characters == ["Ω", "☃"]
    assert odd.labels == same.labels  # both characters read as the one <unk>
    assert plain.unknown_characters == []


def test_evaluate_matches_training_metrics(trained_model, names_csv):
    out, metrics = trained_model
    evaluated = elman.load(out).evaluate(read_labelled_csv(names_csv))
    assert evaluated["accuracy"] == pytest.approx(metrics["test"]["accuracy"])


def test_checkpoint_round_trip_restores_identical_weights(trained_model):
    out, _ = trained_model
    config, state, vocabulary = load_checkpoint(out)
    model = elman.load(out).model
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name])
    assert config["task"] == "classify" and len(vocabulary) == config["model"]["vocab_size"]


def test_a_checkpoint_from_before_the_ensemble_still_loads(trained_model, tmp_path):
    """Classifiers used to be one recurrent network, its parameters at the top of the state dict."""
    config, state, vocabulary = load_checkpoint(trained_model[0])
    options = {k: v for k, v in config["model"].items() if k not in ("members", "bag_ngrams", "bag_buckets")}
    options.pop("generative_ngram_order")
    single = SequenceClassifier(ClassifierConfig(**options, members=1, bag_ngrams=(), generative_ngram_order=0))
    recurrent = {k: v for k, v in state.items() if k.startswith("recurrent.0.")}
    pool = {name: getattr(single, name) for name in ("member_weights", "decision_bias")}
    single.load_state_dict(recurrent | pool)  # old files: weight 1, no bias
    old_layout = torch.nn.Module()
    for name, child in single.recurrent[0].named_children():
        old_layout.add_module(name, child)
    kept = {key: value for key, value in config.items() if key not in ("model", "sha256")}
    save_checkpoint(tmp_path, old_layout, vocabulary, kept | {"model": options})
    expected = single.eval()(*vectorize(["Nakamoto"], vocabulary, config["max_length"])).softmax(1)
    torch.testing.assert_close(elman.load(tmp_path).probabilities("Nakamoto"), expected)


def test_a_checkpoint_from_before_the_n_gram_generative_member_and_the_decision_bias_still_loads(trained_model,
                                                                                                tmp_path):
    config, state, vocabulary = load_checkpoint(trained_model[0])
    old_options = {key: value for key, value in config["model"].items() if key != "generative_ngram_order"}
    old_state = {name: tensor for name, tensor in state.items()
                 if not name.startswith("ngram_generative.") and name != "decision_bias"}
    old_state["member_weights"] = state["member_weights"][:2]  # the recurrent member and the bag
    kept = {key: value for key, value in config.items() if key not in ("model", "sha256")}
    save_checkpoint(tmp_path, types.SimpleNamespace(state_dict=lambda: old_state), vocabulary,
                    kept | {"model": old_options})
    loaded = elman.load(tmp_path)
    assert loaded.model.ngram_generative is None and loaded.model.decision_bias.eq(0).all()
    ids, lengths = vectorize(["Nakamoto", "Petrenko"], vocabulary, None)
    members = elman.load(trained_model[0]).model(ids, lengths, per_member=True)[:2]
    torch.testing.assert_close(loaded.probabilities(["Nakamoto", "Petrenko"]),
                               ensemble(members, old_state["member_weights"]).softmax(1))


def test_n_gram_tables_that_do_not_fit_together_are_refused_by_name(trained_model, tmp_path):
    config, state, vocabulary = load_checkpoint(trained_model[0])
    broken = {**state, "ngram_generative.ngrams.ngram_log_probs": state["ngram_generative.ngrams.ngram_log_probs"][1:]}
    kept = {key: value for key, value in config.items() if key != "sha256"}
    save_checkpoint(tmp_path, types.SimpleNamespace(state_dict=lambda: broken), vocabulary, kept)
    with pytest.raises(CheckpointError, match="n-gram tables do not fit together"):
        elman.load(tmp_path)


def test_a_checkpoint_from_before_the_generative_member_still_loads(trained_model, tmp_path):
    config, state, vocabulary = load_checkpoint(trained_model[0])
    old_options = {key: value for key, value in config["model"].items() if key != "generative_hidden_size"}
    kept = {key: value for key, value in config.items() if key not in ("model", "sha256")}
    model = elman.load(trained_model[0]).model
    save_checkpoint(tmp_path, model, vocabulary, kept | {"model": old_options})
    loaded = elman.load(tmp_path)
    assert loaded.model.generative is None
    torch.testing.assert_close(loaded.probabilities(["Nakamoto", "Petrenko"]),
                               elman.load(trained_model[0]).probabilities(["Nakamoto", "Petrenko"]))


def test_a_generative_member_trains_beside_the_others_and_explains_a_prediction(generative_model, names_csv):
    out, metrics = generative_model
    classifier = elman.load(out)
    model = classifier.model
    assert metrics["test"]["accuracy"] > 0.8 and metrics["refit"]["epochs"] == metrics["epochs_run"]
    assert model.member_weights.shape == (3,)  # recurrent, n-gram bag, generative
    # epochs are chosen by the other members' pool; the generative member joins it once, after selection
    assert "generative member joined the pool" in (out / "train.log").read_text()
    # the prior is the training split's, here balanced: a prior that moves every class alike has nothing for the
    # fit to move (its unit test is test_the_fit_takes_out_the_prior...); the pool's weights were fitted
    torch.testing.assert_close(model.generative.log_prior, torch.full((3,), 1 / 3).log())
    assert float(model.generative.prior_weight) == 1.0
    assert model.member_weights.ne(1 / 3).all()
    [prediction] = classifier.predict(["Yamamoto"], top_k=3)
    assert prediction.labels[0][0] == "Japanese"
    inspection = classifier.inspect("Yamamoto")
    evidence = inspection.evidence
    assert evidence.labels == tuple(label for label, _ in inspection.top(2)[-1])
    assert evidence.tokens == [*"Yamamoto", "<eos>"]
    # the ratios add up to the member's whole log-likelihood ratio of the two classes
    ids, lengths = vectorize(["Yamamoto"], classifier.vocabulary, None)
    with torch.no_grad():
        log_likelihoods = condition_log_likelihoods(model.generative.language_model, ids, lengths)[0]
    first, second = (classifier.labels.index(label) for label in evidence.labels)
    assert sum(evidence.log_ratios) == pytest.approx(float(log_likelihoods[first] - log_likelihoods[second]), abs=1e-4)
    assert sum(evidence.log_ratios) > 0  # the member agrees with the pool here


def test_the_n_gram_generative_member_is_counted_on_train_then_train_and_val_and_explains(trained_model,
                                                                                          names_csv):
    out, metrics = trained_model
    classifier = elman.load(out)
    member = classifier.model.ngram_generative
    train_rows = sum(1 for line in names_csv.read_text().splitlines() if line.endswith(",train"))
    log = (out / "train.log").read_text()
    assert f"n-gram generative member counted on {train_rows} rows" in log  # selection: train only
    assert f"n-gram generative member counted on {metrics['refit']['rows']} rows" in log  # the final model
    assert metrics["refit"]["ngram_generative_count"]["ngrams"] == len(member.ngrams.ngram_keys)
    torch.testing.assert_close(member.log_prior, torch.full((3,), 1 / 3).log())  # the balanced training split
    inspection = classifier.inspect("Yamamoto")
    evidence = inspection.evidence
    assert evidence.labels == tuple(label for label, _ in inspection.top(2)[-1])
    ids, lengths = vectorize(["Yamamoto"], classifier.vocabulary, None)
    log_likelihoods = member.log_likelihoods(ids, lengths)[0]
    first, second = (classifier.labels.index(label) for label in evidence.labels)
    assert sum(evidence.log_ratios) == pytest.approx(float(log_likelihoods[first] - log_likelihoods[second]), abs=1e-4)


def test_the_selected_pool_with_its_generative_member_is_the_one_saved_and_scored(names_csv, tmp_path):
    """Without the refit the selected model is the final one: the pool saved is the one the generative member
    joined (as logged), and the validation scores reported are its."""
    data = read_labelled_csv(names_csv)
    options = {"embedding_dim": 8, "hidden_size": 8, "num_layers": 1, "mlp_hidden": 8, "generative_hidden_size": 16}
    metrics = train_classifier(data, tmp_path, options, TrainConfig(epochs=4, batch_size=16, refit=False),
                               progress=False)
    classifier = elman.load(tmp_path)
    texts, labels = data.subset("val")
    predicted = [prediction.labels[0][0] for prediction in classifier.predict(texts, top_k=1)]
    accuracy = sum(p == label for p, label in zip(predicted, labels, strict=True)) / len(labels)
    assert accuracy == pytest.approx(metrics["val"]["accuracy"])
    joined = re.search(r"generative member joined the pool: weights \[(.*)\], prior weight (\S+);",
                       (tmp_path / "train.log").read_text())
    weights = [float(w) for w in joined.group(1).split(", ")]
    model = classifier.model
    assert model.member_weights.tolist() == pytest.approx(weights, abs=5e-4)
    assert float(model.generative.prior_weight) == pytest.approx(float(joined.group(2)), abs=5e-4)


def test_a_checkpoint_from_before_the_lm_loss_still_loads(trained_model, tmp_path):
    """Members used to run all their layers in one ElmanRNN, ``rnn``, and had no language-model heads."""
    config, _, vocabulary = load_checkpoint(trained_model[0])
    options = {**config["model"], "num_layers": 3, "lm_loss_weight": 0.0}
    torch.manual_seed(0)
    current = SequenceClassifier(ClassifierConfig(**options)).eval()
    old_layout = SequenceClassifier(ClassifierConfig(**options))
    old_layout.load_state_dict(current.state_dict())
    for member in old_layout.recurrent:
        member.rnn = ElmanRNN(options["embedding_dim"], options["hidden_size"], num_layers=3,
                              nonlinearity=options["nonlinearity"], bidirectional=options["bidirectional"])
        member.rnn.load_state_dict({**member.bottom.state_dict(),
                                    **{re.sub(r"_l(\d)", lambda m: f"_l{int(m.group(1)) + 1}", name): value
                                       for name, value in member.upper.state_dict().items()}})
        del member.bottom, member.upper
    old_options = {key: value for key, value in options.items() if key != "lm_loss_weight"}
    kept = {key: value for key, value in config.items() if key not in ("model", "sha256")}
    save_checkpoint(tmp_path, old_layout, vocabulary, kept | {"model": old_options})
    expected = current(*vectorize(["Nakamoto"], vocabulary, config["max_length"])).softmax(1)
    torch.testing.assert_close(elman.load(tmp_path).probabilities("Nakamoto"), expected)


@pytest.fixture
def checkpoint_copy(trained_model, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(trained_model[0], target)
    return target


def test_a_checkpoint_from_a_newer_elman_names_the_options_it_does_not_know(checkpoint_copy):
    path = checkpoint_copy / "config.json"
    config = json.loads(path.read_text())
    config["model"]["attention_heads"] = 4
    config["elman_version"] = "9.0.0"
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model options \['attention_heads'\] are unknown to elman .*; it was "
                                              r"written by elman 9\.0\.0; load it with that version or a newer one"):
        elman.load(checkpoint_copy)


def test_truncated_weights_are_refused(checkpoint_copy):
    weights = checkpoint_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors: content does not match the hash"):
        elman.load(checkpoint_copy)


def test_flipped_byte_is_refused(checkpoint_copy):
    weights = checkpoint_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        elman.load(checkpoint_copy)


def test_corrupt_config_and_foreign_files_are_refused(checkpoint_copy, tmp_path):
    (checkpoint_copy / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        elman.load(checkpoint_copy)
    (checkpoint_copy / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="not an elman checkpoint"):
        elman.load(checkpoint_copy)
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        elman.load(tmp_path / "nowhere")
    (tmp_path / "model.csv").write_text("surname\n")
    with pytest.raises(CheckpointError, match="a file, not a checkpoint directory"):
        elman.load(tmp_path / "model.csv")


def test_pickle_checkpoint_is_refused_and_never_unpickled(tmp_path):
    class Bomb:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    directory = tmp_path / "pickled"
    directory.mkdir()
    (directory / "pytorch_model.bin").write_bytes(pickle.dumps(Bomb()))
    with pytest.raises(CheckpointError, match="pickle-based checkpoints are refused"):
        elman.load(directory)


def test_pickle_bytes_under_the_safetensors_name_are_refused(checkpoint_copy):
    import hashlib

    class Bomb:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    weights = checkpoint_copy / "model.safetensors"
    weights.write_bytes(pickle.dumps(Bomb()))
    config = json.loads((checkpoint_copy / "config.json").read_text())
    config["sha256"]["model.safetensors"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        elman.load(checkpoint_copy)


def test_training_is_repeatable_under_a_seed(names_csv, tmp_path):
    options = {"embedding_dim": 8, "hidden_size": 8, "num_layers": 1, "mlp_hidden": 0, "ngram_buckets": 64}
    config = TrainConfig(epochs=2, batch_size=16)
    data = read_labelled_csv(names_csv)
    from elman.training.classify import train_classifier

    first = train_classifier(data, tmp_path / "a", options, config, progress=False)
    second = train_classifier(data, tmp_path / "b", options, config, progress=False)
    assert first["history"][-1]["train_loss"] == second["history"][-1]["train_loss"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_time_budget_stops_cleanly_and_keeps_a_checkpoint(names_csv, tmp_path):
    from elman.training.classify import train_classifier

    metrics = train_classifier(read_labelled_csv(names_csv), tmp_path, {"hidden_size": 8, "mlp_hidden": 0},
                               TrainConfig(epochs=100_000, patience=100_000, time_budget=1.0), progress=False)
    assert metrics["stopped_by"] == "time budget"
    assert elman.load(tmp_path).predict("Tanaka")
    # the n-gram member's fit is part of the budget and of the reported time
    fit_and_steps = metrics["ngram_member_fit"]["seconds"] + metrics["history"][-1]["seconds"]
    assert fit_and_steps <= metrics["training_seconds"] < 2.0


def interrupt_at_step(step, monkeypatch):
    """Ctrl-C as the ``step``-th training step (counted over both phases) is about to run."""
    import elman.training.classify as classify

    schedule, steps = classify.warmup_cosine, []

    def interrupted_schedule(*args):
        steps.append(None)
        if len(steps) == step:
            raise KeyboardInterrupt
        return schedule(*args)

    monkeypatch.setattr(classify, "warmup_cosine", interrupted_schedule)


SMALL = {"embedding_dim": 8, "hidden_size": 8, "num_layers": 1, "mlp_hidden": 0, "ngram_buckets": 64}


def test_ctrl_c_in_selection_keeps_the_best_model_so_far_and_skips_the_refit(names_csv, tmp_path, monkeypatch):
    interrupt_at_step(20, monkeypatch)  # in the third epoch of 8 steps (120 rows, batches of 16)
    from elman.training.classify import train_classifier

    metrics = train_classifier(read_labelled_csv(names_csv), tmp_path, SMALL,
                               TrainConfig(epochs=6, batch_size=16, patience=100), progress=False)
    assert metrics["stopped_by"] == "interrupt" and "refit" not in metrics
    assert metrics["epochs_run"] == 3  # the steps of the epoch cut short are validated too
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test"] == metrics["test"] and (tmp_path / "confusion.png").is_file()
    assert "no refit: the run was interrupted" in (tmp_path / "train.log").read_text()
    evaluated = elman.load(tmp_path).evaluate(read_labelled_csv(names_csv))
    assert evaluated["accuracy"] == pytest.approx(metrics["test"]["accuracy"])  # the checkpoint is the final model


def test_ctrl_c_stays_the_reason_when_the_cut_short_epoch_also_exhausts_the_patience(names_csv, tmp_path,
                                                                                       monkeypatch):
    interrupt_at_step(5, monkeypatch)  # the first epoch's validation comes after Ctrl-C; patience 0 would end it too
    from elman.training.classify import train_classifier

    metrics = train_classifier(read_labelled_csv(names_csv), tmp_path, SMALL,
                               TrainConfig(epochs=6, batch_size=16, patience=0), progress=False)
    assert metrics["stopped_by"] == "interrupt" and "refit" not in metrics


def test_ctrl_c_in_the_refit_drops_it_for_the_selected_model(names_csv, tmp_path, monkeypatch):
    interrupt_at_step(48 + 5, monkeypatch)  # selection: 6 epochs of 8 steps; then 5 steps into the refit
    from elman.training.classify import train_classifier

    metrics = train_classifier(read_labelled_csv(names_csv), tmp_path, SMALL,
                               TrainConfig(epochs=6, batch_size=16, patience=100), progress=False)
    assert metrics["stopped_by"] == "epochs" and metrics["refit"]["stopped_by"] == "interrupt"
    assert metrics["refit"]["steps"] == 4
    assert "refit" not in json.loads((tmp_path / "config.json").read_text())  # the selection's checkpoint stays
    evaluated = elman.load(tmp_path).evaluate(read_labelled_csv(names_csv))
    assert evaluated["accuracy"] == pytest.approx(metrics["test"]["accuracy"])


def test_joined_splits_keep_every_row_padded_to_the_wider():
    narrow = Split(torch.tensor([[5, 6]]), torch.tensor([2]), torch.tensor([1]))
    wide = Split(torch.tensor([[7, 8, 9], [4, 0, 0]]), torch.tensor([3, 1]), torch.tensor([0, 2]))
    joined = narrow.joined(wide)
    assert joined.ids.tolist() == [[5, 6, 0], [7, 8, 9], [4, 0, 0]]
    assert joined.lengths.tolist() == [2, 3, 1] and joined.targets.tolist() == [1, 0, 2]


@pytest.mark.parametrize("settings,message", [
    ({"class_weighting": "inverse"}, "class_weighting must be one of"),
    ({"bag_class_weighting": "square"}, "bag_class_weighting must be one of"),
    ({"select_by": "accuracy"}, "select_by must be 'macro_f1' or 'loss'"),
])
def test_unknown_training_settings_are_refused_before_anything_is_written(names_csv, tmp_path, settings, message):
    from elman.training.classify import train_classifier

    with pytest.raises(ValueError, match=message):
        train_classifier(read_labelled_csv(names_csv), tmp_path / "out", {}, TrainConfig(**settings), progress=False)
    assert not (tmp_path / "out").exists()


def test_class_weights():
    targets = torch.tensor([0] * 90 + [1] * 10)
    weights = class_weights(targets, 2, "balanced")
    assert weights[1] / weights[0] == pytest.approx(9.0)
    assert (weights[targets].mean()).item() == pytest.approx(1.0)
    assert class_weights(targets, 2, "none") is None


def test_file_without_split_column_gets_a_stratified_split(names_csv, tmp_path):
    from elman.data.classification import prepare

    rows = names_csv.read_text().splitlines()
    unsplit = tmp_path / "unsplit.csv"
    unsplit.write_text("\n".join(["surname,nationality"] + [",".join(r.split(",")[:2]) for r in rows[1:]]) + "\n")
    data = read_labelled_csv(unsplit)
    assert data.splits is None
    prepared = prepare(data, max_length=32, seed=0)
    sizes = {name: len(split) for name, split in prepared.splits.items()}
    assert sizes == {"train": 126, "val": 27, "test": 27}  # 70/15/15 of 60 per label, per label
    for split in prepared.splits.values():
        assert torch.bincount(split.targets, minlength=3).tolist() == [len(split) // 3] * 3


def test_fitted_pool_weights_favour_the_informative_member_and_lower_the_log_loss():
    torch.manual_seed(0)
    targets = torch.randint(0, 4, (500,))
    informative = 3 * torch.nn.functional.one_hot(targets, 4).float() + torch.randn(500, 4)
    noise = 3 * torch.randn(500, 4)
    member_logits = torch.stack([informative, noise])
    weights, prior_changes = fit_member_weights(member_logits, targets)
    assert prior_changes.tolist() == [0.0, 0.0]  # no member read by Bayes' rule
    assert weights[0] > 5 * weights[1] and bool((weights > 0).all())

    def log_loss(w):
        return float(torch.nn.functional.cross_entropy(ensemble(member_logits, w), targets))

    assert log_loss(weights) < log_loss(torch.tensor([0.5, 0.5])) - 0.1


def test_one_member_is_temperature_scaled_and_separable_rows_keep_the_weights_finite():
    targets = torch.tensor([0, 1, 2] * 10)
    logits = torch.nn.functional.one_hot(targets, 3).float().unsqueeze(0)  # every row right, softly
    [weight], _ = fit_member_weights(logits, targets)
    assert 1 < weight < 100  # sharper than given, yet bounded by the prior
    torch.testing.assert_close(ensemble(logits, weight.reshape(1)), logits[0] * weight)


def test_training_fits_the_pool_weights_on_validation(trained_model):
    model = elman.load(trained_model[0]).model
    assert model.member_weights.shape == (3,)  # the recurrent member, the n-gram bag, the n-gram generative member
    assert not torch.allclose(model.member_weights, torch.full((3,), 1 / 3))


def test_the_fit_takes_out_the_prior_a_generative_member_would_count_twice():
    """The discriminative member has learnt the prior; a generative member given Bayes' rule's prior on top of
    the same evidence counts it twice, and the fit moves its prior weight down to take that out."""
    torch.manual_seed(0)
    log_prior = torch.tensor([0.6, 0.25, 0.1, 0.05]).log()
    evidence = 2 * torch.randn(2000, 4)
    targets = torch.distributions.Categorical(logits=evidence + log_prior).sample()
    member_logits = torch.stack([evidence + log_prior, evidence + 2 * log_prior])
    weights, prior_changes = fit_member_weights(member_logits, targets, torch.stack([torch.zeros(4), log_prior]))
    discriminative, prior_change = prior_changes.tolist()
    pooled = ensemble(torch.stack([member_logits[0], member_logits[1] + prior_change * log_prior]), weights)
    assert discriminative == 0.0 and prior_change < -0.5
    assert float(torch.nn.functional.cross_entropy(pooled, targets)) < \
        float(torch.nn.functional.cross_entropy(ensemble(member_logits, fit_member_weights(member_logits, targets)[0]),
                                                targets))


def test_the_expected_score_counts_each_class_by_its_probabilities():
    probabilities = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]], dtype=torch.float64)
    decisions = torch.tensor([[0, 0, 1], [0, 0, 0]])
    # first set: true positives (0.9 + 0.6) / 3 and 0.8 / 3; rows of each class 1.7 / 3 and 1.3 / 3;
    # decisions 2 / 3 and 1 / 3. Second: 1.7 / 3 and 0, decisions 1 and 0.
    first = (0.9 + 0.6 + 0.8) / 3 + (2 * 1.5 / (1.7 + 2) + 2 * 0.8 / (1.3 + 1)) / 2
    second = 1.7 / 3 + (2 * 1.7 / (1.7 + 3) + 0.0) / 2
    torch.testing.assert_close(expected_score(probabilities, decisions),
                               torch.tensor([first, second], dtype=torch.float64))
    # a class whose probability underflowed to 0 everywhere, never decided, counts as F1 0, not as 0 / 0
    accuracy = torch.tensor([(0.9 + 0.6 + 0.8) / 3, 1.7 / 3], dtype=torch.float64)
    with_third = torch.cat([probabilities, torch.zeros(3, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(expected_score(with_third, decisions),
                               accuracy + (torch.tensor([first, second], dtype=torch.float64) - accuracy) * 2 / 3)


def leaning_pool(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibrated log probabilities (rows, 4) of four classes of priors 0.8 to 0.01, and labels drawn from them."""
    generator = torch.Generator().manual_seed(seed)
    log_prior = torch.tensor([0.8, 0.15, 0.04, 0.01]).log()
    log_probabilities = (1.5 * torch.randn(rows, 4, generator=generator) + log_prior).log_softmax(1)
    return log_probabilities, torch.multinomial(log_probabilities.exp(), 1, generator=generator).squeeze(1)


def test_the_decision_bias_favours_the_small_classes_and_raises_accuracy_plus_macro_f1_on_new_rows():
    log_probabilities, _ = leaning_pool(4000, seed=0)  # the labels take no part in the choice
    bias, expected, unbiased = choose_decision_bias(log_probabilities)
    assert bias[3] > bias[0] and expected > unbiased + 0.02
    assert expected == pytest.approx(float(expected_score(log_probabilities.double().exp(),
                                                          (log_probabilities + bias).argmax(1)[None])[0]))
    fresh, targets = leaning_pool(20000, seed=1)
    labels = ["a", "b", "c", "d"]

    def score(decisions):
        metrics = classification_metrics(decisions, targets, labels)
        return metrics["accuracy"] + metrics["macro_f1"]
    assert score((fresh + bias).argmax(1)) > score(fresh.argmax(1)) + 0.02


def test_a_pool_whose_classes_are_alike_keeps_its_decisions():
    rows = 1.5 * torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    # each row's evidence under every order of the classes: no class is smaller or harder than another
    evidence = torch.cat([rows[:, list(order)] for order in itertools.permutations(range(3))])
    bias, expected, unbiased = choose_decision_bias(evidence.log_softmax(1))
    assert bias.eq(0).all() and expected == unbiased


def test_the_pool_biases_its_decisions_as_training_chose_from_validation(trained_model):
    out, metrics = trained_model
    model = elman.load(out).model
    chosen = re.search(r"decisions biased per class, (\{.*\}): expected accuracy \+ macro-F1 \S+ -> \S+; validation "
                       r"accuracy \S+ -> (\S+), macro-F1 \S+ -> (\S+)", (out / "train.log").read_text())
    assert ast.literal_eval(chosen.group(1)) == metrics["decision_bias"]["bias"]
    assert list(metrics["decision_bias"]["bias"]) == elman.load(out).labels
    assert list(metrics["decision_bias"]["bias"].values()) == pytest.approx(model.decision_bias.tolist(), abs=1e-6)
    # the validation scores reported are the biased pool's
    assert (metrics["val"]["accuracy"], metrics["val"]["macro_f1"]) == pytest.approx(
        (float(chosen.group(2)), float(chosen.group(3))), abs=1e-4)
    ids, lengths = vectorize(["Yamamoto", "Petrenko"], elman.load(out).vocabulary, None)
    member_logits = model(ids, lengths, per_member=True)
    expected = (ensemble(member_logits, model.member_weights) + model.decision_bias).log_softmax(1)
    torch.testing.assert_close(model(ids, lengths), expected)


def test_a_checkpoint_whose_decisions_moved_by_a_prior_shift_loads_as_that_bias(trained_model, tmp_path):
    """For a while the pool's decisions moved by a shift x the training prior, both saved as buffers."""
    config, state, vocabulary = load_checkpoint(trained_model[0])
    log_prior = torch.tensor([0.5, 0.3, 0.2]).log()
    old_state = {**{name: tensor for name, tensor in state.items() if name != "decision_bias"},
                 "log_prior": log_prior, "prior_shift": torch.tensor(0.25)}
    save_checkpoint(tmp_path, types.SimpleNamespace(state_dict=lambda: old_state), vocabulary,
                    {key: value for key, value in config.items() if key != "sha256"})
    loaded, current = elman.load(tmp_path).model, elman.load(trained_model[0]).model
    ids, lengths = vectorize(["Nakamoto", "Petrenko"], vocabulary, None)
    members = current(ids, lengths, per_member=True)
    torch.testing.assert_close(loaded(ids, lengths),
                               (ensemble(members, current.member_weights) - 0.25 * log_prior).log_softmax(1))


def test_members_right_but_barely_confident_get_bounded_weights_not_an_overflow():
    """Early in training (here: a 1 s budget) the best weights lie far out; the fit must stop at its bound."""
    torch.manual_seed(0)
    targets = torch.randint(0, 3, (30,))
    timid = 0.05 * torch.nn.functional.one_hot(targets, 3) + 0.01 * torch.randn(30, 3)  # right, unsure
    weights, _ = fit_member_weights(torch.stack([0.3 * torch.randn(30, 3), timid]), targets)
    assert bool(torch.isfinite(weights).all())
    assert weights[1] == pytest.approx(math.exp(MAX_LOG_WEIGHT)) and weights[0] < weights[1]


def test_the_curves_say_which_model_they_show(trained_model):
    from elman.training.classify import curves_caption

    directory, metrics = trained_model
    caption = curves_caption(metrics)
    assert caption.startswith(f"the selection run: {metrics['epochs_run']} epochs, model of epoch "
                              f"{metrics['selected_epoch']} selected")
    assert ("trained afresh on train + val" in caption) == ("refit" in metrics)
    assert (directory / "curves.png").stat().st_size > 0
