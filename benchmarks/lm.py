"""Character language models: tiny-shakespeare against the clock, and conditioned surname generation.

    python benchmarks/lm.py [--budgets 170 600] [--surnames-budget 120] [--threads 2]

The defaults are the acceptance run of the language-model issue: both budgets, temperatures 1.0 and 1.1,
guidance 0, 1 and 2, and a class-balanced judge (about 30 minutes on 2 cores).

1. tiny-shakespeare (``../shared/data/tinyshakespeare.txt``), first 90% train, last 10% validation, elman's
   default language model and settings with each ``--time-budget`` (which hold out the training text's first
   2% to calibrate the output's temperature on): validation loss against wall-clock time, the exact validation
   loss of the kept model (one stateful pass over the whole validation text) before and after calibration,
   samples.
   Reference: nanoGPT's CPU configuration reaches 1.886 nats/char in about 165 s on this kind of machine.
2. Surnames (``../shared/data/surnames.csv``): a language model conditioned on the nationality (default
   settings), and a classifier (the judge, see below); for each nationality, ``--temperatures`` and
   ``--guidance`` strengths, 100 samples: the share not in the training set, and the share the classifier
   assigns to the requested nationality. Beside them, the share of real names of that nationality the
   classifier assigns to it, among the test names it never saw (not in train or val, which its refit
   learns from): what a generator of realistic new names can expect. The judge is trained with every
   nationality weighted alike (``--judge-class-weighting balanced``), so that it does not lean to the
   common ones; ``none`` trains it as ``elman train`` does by default. And how much the language model
   memorised: the share of its probability (temperature 1, no guidance) that falls on the nationality's
   training names, and how many times more probable a training name is than a real name it never saw
   (val or test), per name; were the two alike, the training names would hold only the share ``if
   unmemorised``.

Prints tables and writes ``lm.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import elman
from elman.data import read_labelled_csv, vectorize
from elman.training.classify import CLASS_WEIGHTINGS, TrainConfig, train_classifier
from elman.training.language import (
    VALIDATION_SEGMENTS,
    LanguageTrainConfig,
    read_language_data,
    train_language_model,
)

SAMPLES_PER_NATIONALITY = 100


def shakespeare(path: Path, budget: float, out: Path) -> dict:
    config = LanguageTrainConfig(time_budget=budget)
    metrics = train_language_model(read_language_data(path, config), out, config=config)
    generator = elman.load(out)
    samples = generator.generate("ROMEO:\n", length=400, temperature=0.8, num_samples=2, seed=0)
    print(f"\n## tiny-shakespeare, --time-budget {budget:.0f}")
    estimate = f"val loss ({VALIDATION_SEGMENTS} segments, estimate)"
    print(f"| seconds | step | train loss | {estimate} | val bits/char | chars/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for h in metrics["history"]:
        print(f"| {h['seconds']:.0f} | {h['step']} | {h['train_loss']:.4f} | {h['val_loss']:.4f} | "
              f"{h['val_bits_per_char']:.4f} | {h['chars_per_second']:.0f} |")
    val = metrics["val"]
    print(f"\nkept model, exact stateful validation loss: {val['loss']:.4f} nats/char "
          f"({val['bits_per_char']:.4f} bits/char, perplexity {val['perplexity']:.2f}); "
          f"training {metrics['training_seconds']:.0f} s, stopped by {metrics['stopped_by']}")
    if "calibration" in metrics:
        calibration = metrics["calibration"]
        print(f"calibrated: temperature {calibration['temperature']:.3f}, fitted on {calibration['characters']} "
              f"held-out training characters; validation loss before calibration {calibration['val_loss_before']:.4f}")
    for sample in samples:
        print("\n---\n" + sample)
    return {"budget": budget, "val": val, "calibration": metrics.get("calibration"),
            "training_seconds": metrics["training_seconds"],
            "history": metrics["history"], "samples": samples}


def surnames(path: Path, budget: float, classifier_budget: float, out: Path, temperatures: list[float],
             guidances: list[float], reuse: bool, judge_class_weighting: str) -> dict:
    judge = out / ("surname_classifier" + ("" if judge_class_weighting == "none" else f"_{judge_class_weighting}"))
    if not (reuse and (out / "surname_lm").is_dir()):
        config = LanguageTrainConfig(time_budget=budget)
        data = read_language_data(path, config, condition_column="nationality")
        train_language_model(data, out / "surname_lm", config=config)
    if not (reuse and judge.is_dir()):
        train_classifier(read_labelled_csv(path), judge,
                         config=TrainConfig(time_budget=classifier_budget, class_weighting=judge_class_weighting,
                                            bag_class_weighting=judge_class_weighting))
    generator, classifier = elman.load(out / "surname_lm"), elman.load(judge)
    table = read_labelled_csv(path)
    seen = {text for text, split in zip(table.texts, table.splits, strict=True) if split == "train"}
    learned = {text for text, split in zip(table.texts, table.splits, strict=True) if split != "test"}  # the refit's
    unseen = [(text, label) for text, label, split in zip(table.texts, table.labels, table.splits, strict=True)
              if split == "test" and text not in learned]
    judged = [p.labels[0][0] for p in classifier.predict([text for text, _ in unseen], top_k=1)]
    real = {nationality: sum(p == label == nationality for p, (_, label) in zip(judged, unseen, strict=True))
            / max(1, sum(label == nationality for _, label in unseen)) for nationality in generator.conditions}
    print(f"\n{judge.name} assigns real new names (test names not in train or val) their nationality: "
          + ", ".join(f"{nationality} {share:.0%}" for nationality, share in real.items())
          + f"; a majority for {sum(share > 0.5 for share in real.values())} of {len(real)}")
    results = {"judge": judge.name, "real_unseen_names_recognised": real,
               "memorisation": memorisation(generator, table)}
    print("\n## memorisation (temperature 1, no guidance)")
    print("| nationality | training names | their share of the probability | per name, against unseen real names "
          "| share if unmemorised |")
    print("|---|---:|---:|---:|---:|")
    for nationality, row in results["memorisation"].items():
        print(f"| {nationality} | {row['training_names']} | {row['training_share']:.1%} | "
              f"{row['training_over_unseen_per_name']:.1f}x | {row['training_share_if_unmemorised']:.1%} |")
    for temperature, guidance in ((t, g) for t in temperatures for g in guidances):
        rows = {}
        for nationality in generator.conditions:
            names = generator.generate(num_samples=SAMPLES_PER_NATIONALITY, seed=0, condition=nationality,
                                       temperature=temperature, guidance=guidance)
            named = [name for name in names if name.strip()]  # an empty sample (the end at once) agrees with nothing
            predicted = [p.labels[0][0] for p in classifier.predict(named, top_k=1)] if named else []
            rows[nationality] = {
                "novel": sum(name not in seen for name in names) / SAMPLES_PER_NATIONALITY,
                "classified_as_requested": sum(p == nationality for p in predicted) / SAMPLES_PER_NATIONALITY,
                "real_names_recognised": real[nationality],
                "examples": names[:6],
            }
        print(f"\n## conditioned surname generation (100 samples per nationality, temperature {temperature}, "
              f"guidance {guidance}, judged by {judge.name})")
        print("| nationality | not in training set | classifier agrees | real new names it recognises | examples |")
        print("|---|---:|---:|---:|---|")
        for nationality, row in rows.items():
            print(f"| {nationality} | {row['novel']:.0%} | {row['classified_as_requested']:.0%} | "
                  f"{row['real_names_recognised']:.0%} | {', '.join(row['examples'])} |")
        agree = [row["classified_as_requested"] for row in rows.values()]
        both = sum(meets_both(row) for row in rows.values())
        print(f"\nclassifier agrees on average {sum(agree) / len(agree):.0%}, lowest {min(agree):.0%}, a majority for "
              f"{sum(a > 0.5 for a in agree)} of {len(rows)}; novel >= 90% for "
              f"{sum(row['novel'] >= 0.9 for row in rows.values())}; both for {both}")
        results[f"temperature {temperature}, guidance {guidance}"] = rows
    settings = [key for key in results if key.startswith("temperature")]
    print("\nsettings under which a nationality meets both (novel >= 90%, classifier agrees > 50%):")
    for nationality in generator.conditions:
        print(f"- {nationality}: " + ("; ".join(key for key in settings if meets_both(results[key][nationality]))
                                     or "none"))
    return results


@torch.no_grad()
def name_log_probabilities(generator, names: list[str], condition: str) -> torch.Tensor:
    """log P(name | condition) (N,) under the generator's model: each character and the end of the line."""
    ids, lengths = vectorize(names, generator.vocabulary, generator.max_length + 2)
    conditions = torch.full((len(names),), generator.conditions.index(condition))
    logits, _ = generator.model(ids[:, :-1], lengths=lengths - 1, conditions=conditions)
    scored = logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    return (scored * (torch.arange(ids.shape[1] - 1) < (lengths - 1)[:, None])).sum(1)


def memorisation(generator, table) -> dict:
    """Per nationality: the probability its training names hold, and a training name's mean probability over
    that of the real names of it the model never saw (val and test names not among the training names)."""
    rows = {}
    for nationality in generator.conditions:
        of = [(text, split) for text, label, split in zip(table.texts, table.labels, table.splits, strict=True)
              if label == nationality]
        trained = sorted({text for text, split in of if split == "train"})
        unseen = sorted({text for text, split in of if split != "train"} - set(trained))
        share = float(name_log_probabilities(generator, trained, nationality).exp().sum())
        per_unseen_name = float(name_log_probabilities(generator, unseen, nationality).exp().mean())
        rows[nationality] = {"training_names": len(trained), "unseen_names": len(unseen), "training_share": share,
                             "training_over_unseen_per_name": share / len(trained) / per_unseen_name,
                             "training_share_if_unmemorised": per_unseen_name * len(trained)}
    return rows


def meets_both(row: dict) -> bool:
    return row["novel"] >= 0.9 and row["classified_as_requested"] > 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", type=Path, default=Path("../shared/data/tinyshakespeare.txt"))
    parser.add_argument("--surnames", type=Path, default=Path("../shared/data/surnames.csv"))
    parser.add_argument("--budgets", type=float, nargs="*", default=[170.0, 600.0],
                        help="tiny-shakespeare time budgets")
    parser.add_argument("--surnames-budget", type=float, default=120.0, help="0 skips the surname part")
    parser.add_argument("--classifier-budget", type=float, default=150.0)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 1.1])
    parser.add_argument("--guidance", type=float, nargs="+", default=[0.0, 1.0, 2.0],
                        help="strengths of steering towards the condition (elman generate --guidance)")
    parser.add_argument("--judge-class-weighting", choices=CLASS_WEIGHTINGS, default="balanced",
                        help="the classifier's class weighting (--class-weighting and --bag-class-weighting); "
                             "balanced: it does not lean to the common nationalities")
    parser.add_argument("--reuse", action="store_true", help="reuse the surname models already in --out")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"threads": args.threads, "shakespeare": [
        shakespeare(args.text, budget, args.out / f"shakespeare_{budget:.0f}") for budget in args.budgets]}
    if args.surnames_budget:
        results["surnames"] = surnames(args.surnames, args.surnames_budget, args.classifier_budget, args.out,
                                       args.temperatures, args.guidance, args.reuse, args.judge_class_weighting)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lm.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"\nwritten {args.out / 'lm.json'}")


if __name__ == "__main__":
    main()
