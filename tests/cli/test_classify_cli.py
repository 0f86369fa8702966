"""The classifier commands as a user runs them: real processes where the run itself is the point, the refusals
in this process (the `cli` fixture); clear errors, no tracebacks."""

import csv
import json
import subprocess
import sys


def elman(*args):
    return subprocess.run([sys.executable, "-m", "elman", *map(str, args)], capture_output=True, text=True)


def test_predict_prints_ranked_labels(trained_model):
    run = elman("predict", "--model", trained_model[0], "Nakamoto", "Ivanova", "--top-k", "2")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "Nakamoto" and lines[1].strip().startswith("1. Japanese")
    assert lines[3].startswith("Ivanova") and "%" in lines[4]
    run = elman("predict", "--model", trained_model[0], "Na☃kamoto")
    assert run.returncode == 0
    assert run.stdout.splitlines()[0] == "Na☃kamoto  (never seen in training, read as unknown: ☃)"


def test_predict_json_and_batch_files(trained_model, tmp_path):
    run = elman("predict", "--model", trained_model[0], "Sato", "--json")
    [entry] = json.loads(run.stdout)
    assert entry["text"] == "Sato" and len(entry["labels"]) == 3
    names = tmp_path / "names.csv"
    names.write_text("surname\nSato\nRomer☃\n", encoding="utf-8")
    output = tmp_path / "predictions.csv"
    run = elman("predict", "--model", trained_model[0], "--input", names, "--output", output)
    assert run.returncode == 0, run.stderr
    assert "texts with characters the model never saw: 1 " in run.stdout
    rows = list(csv.DictReader(output.open(encoding="utf-8")))
    assert [r["text"] for r in rows] == ["Sato", "Romer☃"] and rows[0]["prediction"]
    assert [r["unknown_characters"] for r in rows] == ["", "☃"]


def test_evaluate_json(trained_model, names_csv):
    run = elman("evaluate", "--model", trained_model[0], "--data", names_csv, "--json")
    assert run.returncode == 0, run.stderr
    metrics = json.loads(run.stdout)
    assert {"accuracy", "macro_f1", "n", "per_class"} <= set(metrics) and metrics["n"] == 30
    assert metrics["split"] == "test"  # which rows it scored


def test_train_from_the_command_line(names_csv, tmp_path):
    run = elman("train", "--task", "classify", "--data", names_csv, "--out", tmp_path / "m", "--epochs", "2",
                "--hidden-size", "16", "--embedding-dim", "8", "--members", "2", "--bag-ngrams", "2,3",
                "--weight-dropout", "0.1", "--lm-loss-weight", "0.5", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["test"]["n"] == 30
    assert (tmp_path / "m" / "model.safetensors").exists()
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model"]["members"] == 2 and config["model"]["bag_ngrams"] == [2, 3]
    assert config["model"]["weight_dropout"] == 0.1 and config["model"]["lm_loss_weight"] == 0.5
    assert config["training"]["refit"] and config["refit"]  # the final model trained on train + val

    run = elman("train", "--task", "classify", "--data", names_csv, "--out", tmp_path / "text", "--epochs", "2",
                "--hidden-size", "16", "--embedding-dim", "8")
    assert run.returncode == 0, run.stderr
    last = run.stdout.strip().splitlines()[-1]  # each phase counted as itself
    assert last.startswith("selection stopped by epochs after 2 epochs; final model refit on train + val for 2 of "
                           "2 epochs (stopped by epochs);"), last

    run = elman("train", "--task", "classify", "--data", names_csv, "--out", tmp_path / "kept", "--epochs", "2",
                "--hidden-size", "16", "--embedding-dim", "8", "--no-refit", "--json")
    assert run.returncode == 0, run.stderr
    assert "refit" not in json.loads(run.stdout)
    config = json.loads((tmp_path / "kept" / "config.json").read_text())
    assert not config["training"]["refit"] and "refit" not in config


def test_errors_are_one_line_without_traceback(cli, trained_model, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"surname,nationality\nM\xfcller,German\n")
    for args, message in [
        (("train", "--data", bad, "--out", tmp_path / "o"), "line 2: not valid UTF-8"),
        (("evaluate", "--model", tmp_path, "--data", bad), "config.json: missing"),
        (("predict", "--model", trained_model[0]), "give either texts"),
        (("predict", "--model", trained_model[0], "  "), "text 0 is empty"),
        (("train", "--data", bad, "--out", tmp_path / "o", "--epochs", "0"), "must be a positive integer"),
        (("train", "--data", bad, "--out", tmp_path / "o", "--bag-ngrams", "1,x"), "comma-separated n-gram orders"),
        (("train", "--data", bad, "--out", tmp_path / "o", "--bag-ngrams", "0,2"), "orders must be positive"),
    ]:
        run = cli(*args)
        assert run.returncode == 2, (args, run.stdout)
        assert message in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_bad_model_options_are_refused_before_anything_is_written(cli, names_csv, tmp_path):
    for option, value, message in [("--dropout", "1.5", "dropout probability has to be between 0 and 1, but got 1.5"),
                                   ("--weight-dropout", "1", "weight_dropout should be a number in range [0, 1)"),
                                   ("--lm-loss-weight", "-1", "lm_loss_weight must be >= 0")]:
        run = cli("train", "--task", "classify", "--data", names_csv, "--out", tmp_path / "o", option, value)
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert not (tmp_path / "o").exists()


def test_outputs_that_cannot_be_written_are_refused_by_name(cli, trained_model, names_csv, tmp_path):
    kept = names_csv.read_bytes()
    run = cli("predict", "--model", trained_model[0], "--input", names_csv, "--output", names_csv)
    assert run.returncode == 2 and "is the --input file" in run.stderr
    assert names_csv.read_bytes() == kept  # the data were not replaced by predictions
    run = cli("predict", "--model", trained_model[0], "--input", names_csv, "--output", tmp_path / "no" / "p.csv")
    assert run.returncode == 2 and f"there is no directory {tmp_path / 'no'} to write it in" in run.stderr
    run = cli("inspect", "--model", trained_model[0], "Sato", "--out", tmp_path)
    assert run.returncode == 2 and f"{tmp_path} is a directory; give a file name" in run.stderr
    (tmp_path / "report").write_text("")
    run = cli("demo", "--experiment", "xor", "--quick", "--out", tmp_path / "report")
    assert run.returncode == 2 and "is a file; give a directory" in run.stderr
    assert not list(tmp_path.glob(".*.tmp")) and "Traceback" not in run.stderr


def test_predict_reads_plain_lists_and_pipes_and_writes_csv_to_standard_output(trained_model, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("Nakamoto\n\nIvanova\n", encoding="utf-8")  # no header; blank lines skipped
    piped = subprocess.run([sys.executable, "-m", "elman", "predict", "--model", str(trained_model[0])],
                           input=names.read_text(encoding="utf-8"), capture_output=True, text=True)
    assert piped.returncode == 0, piped.stderr
    rows = list(csv.DictReader(piped.stdout.splitlines()))
    assert [r["text"] for r in rows] == ["Nakamoto", "Ivanova"] and rows[0]["prediction"] == "Japanese"
    run = elman("predict", "--model", trained_model[0], "--input", names, "--output", tmp_path / "p.csv")
    assert run.returncode == 0, run.stderr
    assert list(csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8"))) == rows
    empty = subprocess.run([sys.executable, "-m", "elman", "predict", "--model", str(trained_model[0])],
                           input="\n", capture_output=True, text=True)
    assert empty.returncode == 2 and "standard input held no text" in empty.stderr


def test_inspect_names_characters_the_model_never_saw(trained_model):
    run = elman("inspect", "--model", trained_model[0], "Sato7")
    assert run.returncode == 0 and "never seen in training, read as unknown: 7" in run.stdout, run.stderr
    run = elman("inspect", "--model", trained_model[0], "Sato7", "--json")
    assert json.loads(run.stdout)["unknown_characters"] == ["7"]
