import io
import random
import subprocess

import pytest
import torch

from elman.cli import main


@pytest.fixture(params=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def device(request):
    """Every device this machine has (on CUDA the layer hands tanh/relu stacks to cuDNN, else its Python loop)."""
    return request.param


@pytest.fixture(scope="session")
def names_csv(tmp_path_factory):
    """A small generated surname file: three 'nationalities' with distinct endings, with a split column."""
    rng = random.Random(0)
    endings = {"Slavic": ["ov", "ova", "enko", "ski"], "Japanese": ["moto", "yama", "ko", "da"],
               "Spanish": ["ez", "ado", "ero", "os"]}
    rows = ["surname,nationality,split"]
    for label, suffixes in endings.items():
        for i in range(60):
            stem = "".join(rng.choice("bcdfgklmnprstv") + rng.choice("aeiou") for _ in range(rng.randint(1, 3)))
            split = "train" if i < 40 else "val" if i < 50 else "test"
            rows.append(f"{stem.capitalize()}{rng.choice(suffixes)},{label},{split}")
    path = tmp_path_factory.mktemp("data") / "names.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_model(names_csv, tmp_path_factory):
    from elman.data import read_labelled_csv
    from elman.training.classify import TrainConfig, train_classifier

    out = tmp_path_factory.mktemp("model")
    options = {"embedding_dim": 16, "hidden_size": 32, "num_layers": 1, "mlp_hidden": 32, "ngrams": (2, 3),
               "ngram_buckets": 256}
    metrics = train_classifier(read_labelled_csv(names_csv), out, options,
                               TrainConfig(epochs=15, batch_size=16, learning_rate=1e-2), progress=False)
    return out, metrics


@pytest.fixture(scope="session")
def generative_model(names_csv, tmp_path_factory):
    """A classifier with recurrent, n-gram bag and generative members (the n-gram generative member left out,
    so that the generative member's evidence is shown)."""
    from elman.data import read_labelled_csv
    from elman.training.classify import TrainConfig, train_classifier

    out = tmp_path_factory.mktemp("generative")
    options = {"embedding_dim": 16, "hidden_size": 16, "num_layers": 1, "mlp_hidden": 16, "generative_hidden_size": 32,
               "generative_ngram_order": 0}
    metrics = train_classifier(read_labelled_csv(names_csv), out, options,
                               TrainConfig(epochs=8, batch_size=16, learning_rate=1e-2), progress=False)
    return out, metrics


@pytest.fixture(scope="session")
def story_txt(tmp_path_factory):
    """A small generated text with learnable structure: sentences from a tiny grammar."""
    rng = random.Random(1)
    subjects, verbs, objects = ["the cat", "a dog", "my aunt", "the king"], ["sees", "likes", "eats"], \
        ["the fish", "a cake", "the moon", "bread"]
    sentences = [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(600)]
    path = tmp_path_factory.mktemp("text") / "story.txt"
    path.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_lm(story_txt, tmp_path_factory):
    from elman.training.language import LanguageTrainConfig, read_language_data, train_language_model

    out = tmp_path_factory.mktemp("lm")
    config = LanguageTrainConfig(epochs=12, batch_size=16, chunk_length=32, learning_rate=1e-2)
    data = read_language_data(story_txt, config)
    metrics = train_language_model(data, out, {"embedding_dim": 16, "hidden_size": 64, "num_layers": 1}, config,
                                   progress=False)
    return out, metrics


@pytest.fixture(scope="session")
def conditioned_lm(names_csv, tmp_path_factory):
    from elman.training.language import LanguageTrainConfig, read_language_data, train_language_model

    out = tmp_path_factory.mktemp("names_lm")
    config = LanguageTrainConfig(epochs=40, batch_size=16, learning_rate=1e-2, patience=10)
    data = read_language_data(names_csv, config, condition_column="nationality")
    # without embedding dropout: the guidance test's margins were measured on this model
    options = {"embedding_dim": 16, "hidden_size": 48, "num_layers": 1, "embedding_dropout": 0.0}
    metrics = train_language_model(data, out, options, config, progress=False)
    return out, metrics


HOSTILE_CASES: dict[str, int] = {}  # cases tried by the hostile-input tests, reported at the end of the run


@pytest.fixture(scope="session")
def hostile_cases():
    return HOSTILE_CASES


def pytest_terminal_summary(terminalreporter):
    if HOSTILE_CASES:
        parts = ", ".join(f"{name} {count}" for name, count in sorted(HOSTILE_CASES.items()))
        terminalreporter.write_line(f"hostile-input suite: {sum(HOSTILE_CASES.values())} cases tried ({parts})")


@pytest.fixture
def cli(capsys, monkeypatch):
    """The command line run in this process, two seconds faster than a new one (torch's import): ``cli(*args)``
    -> a CompletedProcess with main's exit status (argparse's too) and what it printed; standard input empty.
    Anything main lets through (a user would see its traceback) fails the test."""
    monkeypatch.setattr("sys.stdin", io.StringIO(""))

    def run(*args) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            status = main([str(arg) for arg in args])
        except SystemExit as exit:
            status = exit.code
        printed = capsys.readouterr()
        return subprocess.CompletedProcess(args, status, printed.out, printed.err)
    return run
