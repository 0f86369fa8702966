"""Surname -> nationality, side by side: the book's system, an n-gram logistic regression, and elman.

    python benchmarks/surnames.py [--data ../shared/data/surnames.csv] [--threads 2] [--budget 150] [--seeds 0 1 2]

1. The book's model and training procedure (*NLP with PyTorch*, ch. 6), re-implemented faithfully:
   per-row vectorising in a Dataset, every surname padded to the longest one, embedding 100, an RNNCell
   stepped from Python (hidden 64), the state at each surname's last character gathered row by row,
   two linear layers with dropout 0.5 (F.dropout as in the book: also active at evaluation),
   class weights 1/frequency, Adam 1e-3, ReduceLROnPlateau, batch 64, early stopping after 5 epochs.
2. The same model configuration in elman's pipeline (tensors built once, length-bucketed batches,
   ElmanRNN with lengths): end-to-end training throughput against (1).
3. A character n-gram (1-4) TF-IDF logistic regression (scikit-learn), C chosen on the validation split.
4. elman's classifier with default settings and ``--time-budget`` (selection on val, then the final model
   trained on train + val).
5. With ``--members`` (and nothing else): elman's classifier per seed, each of its members alone and the
   pool, with the F1 of the five smallest classes; ``--generative-hidden-size 256`` adds the generative member,
   ``--generative-ngram-order 0`` leaves out the n-gram generative member.

Prints a table (test accuracy, macro-F1, training seconds, training surnames/second) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from elman.data import read_labelled_csv
from elman.data.vocabulary import vectorize
from elman.metrics import classification_metrics
from elman.models.classifier import batched_logits
from elman.training.classify import TrainConfig, train_classifier

# --- 1. the book's pipeline --------------------------------------------------------------------------


class BookVectorizer:
    """Characters with mask 0, unk 1, begin 2, end 3; every surname padded to one fixed length."""

    def __init__(self, surnames: list[str], nationalities: list[str]):
        self.chars = {"<MASK>": 0, "<UNK>": 1, "<BEGIN>": 2, "<END>": 3}
        for surname in surnames:
            for char in surname:
                self.chars.setdefault(char, len(self.chars))
        self.nationalities = {n: i for i, n in enumerate(sorted(set(nationalities)))}
        self.vector_length = max(len(s) for s in surnames) + 2

    def vectorize(self, surname: str) -> tuple[torch.Tensor, int]:
        indices = [2] + [self.chars.get(c, 1) for c in surname] + [3]
        vector = torch.zeros(self.vector_length, dtype=torch.int64)
        vector[: len(indices)] = torch.tensor(indices[: self.vector_length])
        return vector, min(len(indices), self.vector_length)


class BookDataset(torch.utils.data.Dataset):
    def __init__(self, surnames, nationalities, vectorizer: BookVectorizer):
        self.surnames, self.nationalities, self.vectorizer = surnames, nationalities, vectorizer

    def __len__(self):
        return len(self.surnames)

    def __getitem__(self, index):
        vector, length = self.vectorizer.vectorize(self.surnames[index])
        return {"x_data": vector, "y_target": self.vectorizer.nationalities[self.nationalities[index]],
                "x_length": length}


class BookElmanRNN(nn.Module):
    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.rnn_cell = nn.RNNCell(input_size, hidden_size)
        self.hidden_size = hidden_size

    def forward(self, x_in):  # (B, T, E), batch first -> (B, T, H)
        x_in = x_in.permute(1, 0, 2)
        hidden = torch.zeros(x_in.size(1), self.hidden_size)
        hiddens = []
        for t in range(x_in.size(0)):
            hidden = self.rnn_cell(x_in[t], hidden)
            hiddens.append(hidden)
        return torch.stack(hiddens).permute(1, 0, 2)


def column_gather(y_out, x_lengths):
    """The state at each row's last valid step, one row at a time (as in the book)."""
    x_lengths = x_lengths.long().detach().cpu().numpy() - 1
    return torch.stack([y_out[batch, column] for batch, column in enumerate(x_lengths)])


class BookSurnameClassifier(nn.Module):
    def __init__(self, embedding_size, num_embeddings, num_classes, rnn_hidden_size):
        super().__init__()
        self.emb = nn.Embedding(num_embeddings, embedding_size, padding_idx=0)
        self.rnn = BookElmanRNN(embedding_size, rnn_hidden_size)
        self.fc1 = nn.Linear(rnn_hidden_size, rnn_hidden_size)
        self.fc2 = nn.Linear(rnn_hidden_size, num_classes)

    def forward(self, x_in, x_lengths):
        y_out = column_gather(self.rnn(self.emb(x_in)), x_lengths)
        y_out = F.relu(self.fc1(F.dropout(y_out, 0.5)))
        return self.fc2(F.dropout(y_out, 0.5))


def build_book(data, seed: int = 1337):
    """The book's vectorizer, model, loss (class weights 1/frequency), Adam and data loaders."""
    torch.manual_seed(seed)
    vectorizer = BookVectorizer(data.texts, data.labels)
    counts = {n: data.labels.count(n) for n in vectorizer.nationalities}
    weights = 1.0 / torch.tensor([counts[n] for n in vectorizer.nationalities], dtype=torch.float32)
    model = BookSurnameClassifier(100, len(vectorizer.chars), len(vectorizer.nationalities), 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loader(split, shuffle):
        texts, labels = data.subset(split)
        return torch.utils.data.DataLoader(BookDataset(texts, labels, vectorizer), batch_size=64, shuffle=shuffle,
                                           drop_last=True)

    return vectorizer, model, nn.CrossEntropyLoss(weight=weights), optimizer, loader


def book_epoch(model, batches, loss_function, optimizer) -> int:
    """One training epoch of the book's loop; returns the number of surnames trained on."""
    model.train()
    trained = 0
    for batch in batches:
        optimizer.zero_grad()
        loss = loss_function(model(batch["x_data"], batch["x_length"]), batch["y_target"])
        loss.backward()
        optimizer.step()
        trained += batch["y_target"].numel()
    return trained


def run_book(data, max_epochs: int, patience: int = 5) -> dict:
    vectorizer, model, loss_function, optimizer, loader = build_book(data)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=1)
    best_loss, best_state, stale, trained, seconds, epochs = float("inf"), None, 0, 0, 0.0, 0
    for _ in range(max_epochs):
        epochs += 1
        start = time.perf_counter()
        trained += book_epoch(model, loader("train", True), loss_function, optimizer)
        seconds += time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            losses = [loss_function(model(b["x_data"], b["x_length"]), b["y_target"]).item()
                      for b in loader("val", False)]
        val_loss = sum(losses) / len(losses)
        scheduler.step(val_loss)
        if val_loss < best_loss:
            best_loss, best_state, stale = val_loss, {k: v.clone() for k, v in model.state_dict().items()}, 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    test_s, test_n = data.subset("test")
    with torch.no_grad():
        vectors = [vectorizer.vectorize(s) for s in test_s]
        logits = model(torch.stack([v for v, _ in vectors]), torch.tensor([n for _, n in vectors]))
    labels = list(vectorizer.nationalities)
    metrics = classification_metrics(logits.argmax(1), torch.tensor([vectorizer.nationalities[n] for n in test_n]),
                                     labels)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "train_seconds": seconds,
            "surnames_per_second": trained / seconds, "epochs": epochs}


# --- 2. / 4. elman ----------------------------------------------------------------------------------

# the book's model: dropout 0.5 before each of the two linear layers, none on the embeddings
BOOK_CONFIGURATION = {"embedding_dim": 100, "hidden_size": 64, "num_layers": 1, "bidirectional": False,
                      "pooling": ("last",), "mlp_hidden": 64, "ngrams": (), "bag_ngrams": (), "dropout": 0.5,
                      "embedding_dropout": 0.0, "weight_dropout": 0.0, "lm_loss_weight": 0.0,
                      "generative_ngram_order": 0}


def run_elman(data, out: Path, model_options: dict, config: TrainConfig) -> dict:
    metrics = train_classifier(data, out, model_options, config, progress=False)
    train_size = len(data.subset("train")[0])
    seen = train_size * len(metrics["history"])
    epoch_seconds = sum(train_size / h["texts_per_second"] for h in metrics["history"])
    return {"accuracy": metrics["test"]["accuracy"], "macro_f1": metrics["test"]["macro_f1"],
            "train_seconds": metrics["training_seconds"], "surnames_per_second": seen / epoch_seconds,
            "epochs": metrics["epochs_run"], "stopped_by": metrics["stopped_by"],
            "zero_f1": [label for label, scores in metrics["test"]["per_class"].items() if scores["f1"] == 0]}


def interleaved_throughput(data, rounds: int = 7) -> dict:
    """Training epochs of the book's pipeline and of elman's (book's configuration) taking turns, so that
    machine noise hits both alike; the median surnames/second of each."""
    from elman.data.classification import epoch_batches, prepare
    from elman.models.classifier import ClassifierConfig, SequenceClassifier
    from elman.training.classify import batch_loss, class_weights
    from elman.training.optimisation import Optimisation
    from elman.training.processes import Processes

    _, book_model, book_loss, book_optimizer, loader = build_book(data)
    config = TrainConfig(batch_size=64, learning_rate=1e-3, weight_decay=0.0, warmup_fraction=0.0)
    prepared = prepare(data, config.max_length, config.seed)
    train = prepared.splits["train"]
    model = SequenceClassifier(ClassifierConfig(len(prepared.vocabulary), len(prepared.labels), **BOOK_CONFIGURATION))
    loss = nn.CrossEntropyLoss(weight=class_weights(train.targets, len(prepared.labels), "balanced"), reduction="sum")
    run = Optimisation(model, 1e-3, 0.0, config.clip_norm, config.precision, Processes())
    generator = torch.Generator().manual_seed(0)
    book_rates, elman_rates = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        trained = book_epoch(book_model, loader("train", True), book_loss, book_optimizer)
        book_rates.append(trained / (time.perf_counter() - start))
        start = time.perf_counter()
        for batch in epoch_batches(train, config.batch_size, generator):
            run.step(1e-3, batch_loss, batch, loss)
        elman_rates.append(len(train) / (time.perf_counter() - start))
    book_rate, elman_rate = sorted(book_rates)[rounds // 2], sorted(elman_rates)[rounds // 2]
    return {"book_surnames_per_second": book_rate, "elman_surnames_per_second": elman_rate,
            "speedup": elman_rate / book_rate, "rounds": rounds}


# --- 3. n-gram logistic regression ------------------------------------------------------------------


def run_logistic_regression(data) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    (train_s, train_n), (val_s, val_n), (test_s, test_n) = (data.subset(s) for s in ("train", "val", "test"))
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), lowercase=False, sublinear_tf=True)
    features = vectorizer.fit_transform(train_s)
    candidates = []
    for c in (3.0, 10.0, 30.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(features, train_n)
        predicted = model.predict(vectorizer.transform(val_s))
        candidates.append((f1_score(val_n, predicted, average="macro") + accuracy_score(val_n, predicted), c, model))
    _, c, model = max(candidates, key=lambda item: item[0])
    seconds = time.perf_counter() - start
    predicted = model.predict(vectorizer.transform(test_s))
    return {"accuracy": accuracy_score(test_n, predicted), "macro_f1": f1_score(test_n, predicted, average="macro"),
            "train_seconds": seconds, "surnames_per_second": None, "C": c}


# --- 5. each member of elman's classifier alone, and their pool ---------------------------------------


def member_names(model) -> list[str]:
    count = len(model.recurrent)
    recurrent = [f"Elman RNN {i + 1}" for i in range(count)] if count > 1 else ["Elman RNN"]
    others = {"n-gram bag": model.bag, "n-gram generative (Bayes' rule)": model.ngram_generative,
              "generative (Bayes' rule)": model.generative}
    return recurrent + [name for name, member in others.items() if member is not None]


def run_members(data, out: Path, model_options: dict, config: TrainConfig) -> dict:
    """Train elman's classifier; score each member alone and the pool on the test split: accuracy, macro-F1
    and the F1 of the five classes with the fewest training rows."""
    import elman

    train_classifier(data, out, model_options, config, progress=False)
    classifier = elman.load(out)
    model = classifier.model
    texts, labels = data.subset("test")
    ids, lengths = vectorize(texts, classifier.vocabulary, None)
    targets = torch.tensor([classifier.labels.index(label) for label in labels])
    member_logits = batched_logits(model, ids, lengths, per_member=True)
    for index, member in enumerate(model.members):  # alone, a Bayes' rule member reads with its training prior
        if member in model.bayes_members:
            member_logits[index] += (1 - member.prior_weight) * member.log_prior
    train_labels = data.subset("train")[1]
    counts = {label: train_labels.count(label) for label in classifier.labels}
    smallest = sorted(classifier.labels, key=counts.get)[:5]
    scored = {**dict(zip(member_names(model), member_logits, strict=True)),
              "pool": batched_logits(model, ids, lengths)}
    results = {}
    for name, logits in scored.items():
        metrics = classification_metrics(logits.argmax(1), targets, classifier.labels)
        results[name] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                         "smallest_f1": {label: metrics["per_class"][label]["f1"] for label in smallest}}
    return results


def print_members(runs: dict[int, dict]) -> None:
    names = list(next(iter(runs.values())))
    smallest = list(next(iter(runs.values()))["pool"]["smallest_f1"])
    width = max(len(name) for name in names)
    print(f"\n{'member':<{width}} {'seed':>5} {'test acc':>8} {'macro-F1':>8}  F1 of the smallest: "
          + " ".join(f"{label[:10]:>10}" for label in smallest))
    for name in names:
        rows = [(str(seed), run[name]) for seed, run in runs.items()]
        mean = {key: sum(r[key] for _, r in rows) / len(rows) for key in ("accuracy", "macro_f1")}
        mean["smallest_f1"] = {label: sum(r["smallest_f1"][label] for _, r in rows) / len(rows) for label in smallest}
        for seed, r in [*rows, ("mean", mean)]:
            print(f"{name:<{width}} {seed:>5} {r['accuracy']:>8.4f} {r['macro_f1']:>8.4f}  {'':>19} "
                  + " ".join(f"{r['smallest_f1'][label]:>10.2f}" for label in smallest))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/surnames.csv"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=150.0, help="--time-budget of elman's default run")
    parser.add_argument("--book-epochs", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds of elman's default run, one run each (a time-budgeted run's result varies)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--members", action="store_true", help="only elman's classifier: each member alone and the "
                        "pool, per seed (give --seeds 0 1 2)")
    parser.add_argument("--generative-hidden-size", type=int, default=0,
                        help="with --members: the classifier's generative member (0: none, the default)")
    parser.add_argument("--generative-ngram-order", type=int, default=5,
                        help="with --members: the classifier's n-gram generative member (0: none; 5, the default)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = read_labelled_csv(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.members:
        options = {"generative_hidden_size": args.generative_hidden_size,
                   "generative_ngram_order": args.generative_ngram_order}
        kind = f"generative{args.generative_hidden_size}-ngram{args.generative_ngram_order}"
        runs = {}
        for seed in args.seeds:
            print(f"elman, generative member {args.generative_hidden_size or 'none'}, n-gram generative member "
                  f"{args.generative_ngram_order or 'none'}, seed {seed}, --time-budget {args.budget:.0f} ...",
                  flush=True)
            runs[seed] = run_members(data, args.out / f"surnames-members-{kind}-seed{seed}", options,
                                     TrainConfig(time_budget=args.budget, seed=seed))
        print_members(runs)
        path = args.out / f"surnames-members-{kind}.json"
        path.write_text(json.dumps({"runs": runs, "budget": args.budget, "threads": args.threads}, indent=2))
        print(f"wrote {path}")
        return

    results = {}
    print("book's pipeline ...", flush=True)
    results["book (RNNCell loop, ch. 6)"] = run_book(data, args.book_epochs)
    print("elman pipeline, book's model configuration ...", flush=True)
    results["elman pipeline, book's configuration"] = run_elman(
        data, args.out / "surnames-book-config", BOOK_CONFIGURATION,
        TrainConfig(batch_size=64, learning_rate=1e-3, class_weighting="balanced", select_by="loss", patience=5,
                    epochs=100, warmup_fraction=0.0, weight_decay=0.0, refit=False))  # the book keeps its selection
    print("n-gram logistic regression ...", flush=True)
    results["char 1-4-gram logistic regression"] = run_logistic_regression(data)
    for seed in args.seeds:
        name = "elman default" + (f", seed {seed}" if args.seeds != [0] else "")
        print(f"{name}, --time-budget {args.budget:.0f} ...", flush=True)
        out = args.out / ("surnames-default" + (f"-seed{seed}" if seed else ""))
        results[name] = run_elman(data, out, {}, TrainConfig(time_budget=args.budget, seed=seed))

    print(f"\n{'system':<40} {'test acc':>8} {'macro-F1':>8} {'train s':>8} {'surnames/s':>10}")
    for name, r in results.items():
        rate = f"{r['surnames_per_second']:.0f}" if r["surnames_per_second"] else "-"
        print(f"{name:<40} {r['accuracy']:>8.4f} {r['macro_f1']:>8.4f} {r['train_seconds']:>8.1f} {rate:>10}")
    defaults = [r for name, r in results.items() if name.startswith("elman default")]
    accuracy, macro_f1 = (sum(r[key] for r in defaults) / len(defaults) for key in ("accuracy", "macro_f1"))
    print(f"elman default, mean of {len(defaults)} run(s): test accuracy {accuracy:.4f} (target >= 0.855), macro-F1 "
          f"{macro_f1:.4f} (target >= 0.60); runs with a class of F1 0: {sum(r['zero_f1'] != [] for r in defaults)}")
    throughput = interleaved_throughput(data)
    book_rate, elman_rate = throughput["book_surnames_per_second"], throughput["elman_surnames_per_second"]
    print(f"\nend-to-end training throughput, book's configuration, epochs taking turns: book {book_rate:.0f} "
          f"surnames/s, elman {elman_rate:.0f} surnames/s: {throughput['speedup']:.2f}x (target >= 5x)")
    (args.out / "surnames.json").write_text(json.dumps({"results": results, "throughput": throughput,
                                                        "threads": args.threads}, indent=2))
    print(f"wrote {args.out / 'surnames.json'}")


if __name__ == "__main__":
    main()
