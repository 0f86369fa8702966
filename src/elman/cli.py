"""The ``elman`` command line: argument parsing and printing only; the work happens in the packages."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import Field, fields
from pathlib import Path

from elman import __version__
from elman.errors import UsageError
from elman.models.classifier import ClassifierConfig
from elman.models.language_model import LanguageModelConfig
from elman.options import positive_int
from elman.serve.limits import Limits
from elman.training.classify import TrainConfig
from elman.training.language import LONG_RUN_SECONDS, PRESETS, LanguageTrainConfig
from elman.training.resume import check_new_run_dir, saved_settings


def _add_columns(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-column", help="column of the texts (default: surname or text)")
    parser.add_argument("--label-column", help="column of the labels (default: nationality or label)")
    parser.add_argument("--split-column", help="column of train/val/test (default: split, if present)")


def _read(args: argparse.Namespace, require_labels: bool = True):
    from elman.data.reader import read_labelled_csv

    return read_labelled_csv(args.data, args.text_column, args.label_column, args.split_column, require_labels)


def _print_metrics(name: str, metrics: dict) -> None:
    print(f"{name}: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} (n = {metrics['n']})")


def _options(args: argparse.Namespace, saved: dict[str, dict], model_config: type, training_config: type,
             from_data: tuple[str, ...]) -> tuple[dict, dict]:
    """Keyword arguments of the model's and the training's config dataclasses: the flags given on the command
    line and, for every option not given, the run's own where one is resumed (``saved``: its training states'
    settings), so a resumed run goes on as it began, also where elman's defaults have changed since.
    ``from_data``: model settings the data decides (the vocabulary's size, ...)."""
    merged = []
    for name, config in (("model", model_config), ("training", training_config)):
        known = {f.name for f in fields(config)} - set(from_data)  # others are refused by the resume's check
        run_own = {key: tuple(value) if isinstance(value, list) else value  # JSON has lists, the configs tuples
                   for key, value in saved.get(name, {}).items() if key in known}
        merged.append({**run_own, **{key: getattr(args, key) for key in known if getattr(args, key, None) is not None}})
    return merged[0], merged[1]


TASK_CONFIGS = {"classify": (ClassifierConfig, TrainConfig), "lm": (LanguageModelConfig, LanguageTrainConfig)}
DATA_OPTIONS = {"classify": ("label_column",), "lm": ("val_data", "lines", "condition_column")}  # one task's only
PRESET_NAMES = {"text": "a text", "long text": f"a text under --time-budget >= {LONG_RUN_SECONDS:g}",
                "lines": "lines"}


def _settings() -> dict[str, dict[str, Field]]:
    """The config fields that are options (``elman.options.option``): name -> {task: its field}."""
    settings: dict[str, dict[str, Field]] = {}
    for task, configs in TASK_CONFIGS.items():
        for config in configs:
            for f in fields(config):
                if "help" in f.metadata:
                    settings.setdefault(f.name, {})[task] = f
    return settings


def _shown(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else "none" if value is None else str(value)


def _default(task: str, setting: Field) -> str:
    """A task's default of a setting as ``--help`` says it: the field's, or a language model's presets'."""
    presets = {name: values[setting.name] for name, values in PRESETS.items() if setting.name in values}
    if task != "lm" or not presets:
        return _shown(setting.default)
    if len(presets) == len(PRESETS) and len(set(presets.values())) == 1:
        return _shown(next(iter(presets.values())))
    said = ", ".join(f"{_shown(value)} on {PRESET_NAMES[name]}" for name, value in presets.items())
    return said if len(presets) == len(PRESETS) else f"{said}, else {_shown(setting.default)}"


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """A flag for every setting of either task's configs, its help and each task's default read from them."""
    for name, by_task in _settings().items():
        first_task, setting = next(iter(by_task.items()))
        helps = {task: each.metadata["help"] for task, each in by_task.items()}
        if len(set(helps.values())) > 1:
            said = "; ".join(f"{task}: {text}" for task, text in helps.items())
        elif len(by_task) < len(TASK_CONFIGS):  # one task's setting
            said = f"{first_task}: {helps[first_task]}"
        else:
            said = helps[first_task]
        if setting.default is True:  # a setting that is on unless turned off
            parser.add_argument(_flag(name, setting), dest=name, action="store_const", const=False, help=said)
            continue
        defaults = {task: _default(task, each) for task, each in by_task.items()}
        shown = defaults[first_task] if len(set(defaults.values())) == 1 \
            else ", ".join(f"{task} {default}" for task, default in defaults.items())
        extra = {key: value for key, value in setting.metadata.items() if key != "help"}
        parser.add_argument(_flag(name), dest=name, help=f"{said} (default: {shown})", **extra)


def _flag(name: str, setting: Field | None = None) -> str:
    return ("--no-" if setting is not None and setting.default is True else "--") + name.replace("_", "-")


def _refuse_options_of_other_tasks(args: argparse.Namespace) -> None:
    for task in TASK_CONFIGS:
        if task == args.task:
            continue
        given = [_flag(name) for name in DATA_OPTIONS[task] if getattr(args, name, None) not in (None, False)]
        given += [_flag(name, by_task[task]) for name, by_task in _settings().items()
                  if list(by_task) == [task] and getattr(args, name) is not None]
        if given:
            raise UsageError(f"{', '.join(given)} applies to --task {task} only, not --task {args.task}")


def _train(args: argparse.Namespace) -> int:
    _refuse_options_of_other_tasks(args)
    if args.resume is not None:
        if args.overwrite:
            raise UsageError("--resume continues a run and --overwrite starts one afresh; give one of them")
        if args.out is not None and args.out.resolve() != args.resume.resolve():
            raise UsageError(f"--resume {args.resume} continues in its own directory; leave out --out {args.out}")
        saved = saved_settings(args.resume)
        model = saved.get("model", {})
        task = "lm" if "num_conditions" in model else "classify" if "num_classes" in model else args.task
        if task != args.task:
            raise UsageError(f"{args.resume} holds a run of --task {task}; resume it with --task {task}")
        args.out = args.resume
    elif args.out is None:
        raise UsageError("give --out DIR for the outputs (or --resume DIR to continue a run)")
    else:
        check_new_run_dir(args.out, args.overwrite)
        saved = {}
    return _train_classifier(args, saved) if args.task == "classify" else _train_language_model(args, saved)


def _train_classifier(args: argparse.Namespace, saved: dict[str, dict]) -> int:
    from elman.models.classifier import ClassifierConfig
    from elman.training.classify import TrainConfig, train_classifier

    data = _read(args)
    model_options, training = _options(args, saved, ClassifierConfig, TrainConfig, ("vocab_size", "num_classes"))
    metrics = train_classifier(data, args.out, model_options, TrainConfig(**training), progress=not args.json,
                               resume=args.resume is not None)
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    else:
        for split in ("val", "test"):
            if split in metrics:
                _print_metrics(split, metrics[split])
        phases = f"selection stopped by {metrics['stopped_by']} after {metrics['epochs_run']} epochs"
        if "refit" in metrics:  # each phase counted as itself: a refit cut short by the budget says so
            refit = metrics["refit"]
            phases += (f"; final model refit on train + val for {refit['epochs']:g} of {metrics['epochs_run']} "
                       f"epochs (stopped by {refit['stopped_by']})")
        print(f"{phases}; {metrics['training_seconds']:.0f} s in all; model, metrics and figures in {args.out}")
    return 0


def _train_language_model(args: argparse.Namespace, saved: dict[str, dict]) -> int:
    from elman.models.language_model import LanguageModelConfig
    from elman.training.language import LanguageTrainConfig, read_language_data, train_language_model

    model_options, training = _options(args, saved, LanguageModelConfig, LanguageTrainConfig,
                                       ("vocab_size", "num_conditions"))
    config = LanguageTrainConfig(**training)
    data = read_language_data(args.data, config, args.val_data, args.lines, args.text_column, args.condition_column,
                              args.split_column)
    metrics = train_language_model(data, args.out, model_options, config, progress=not args.json,
                                   resume=args.resume is not None)
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    else:
        val = metrics["val"]
        print(f"validation: {val['loss']:.4f} nats/char, {val['bits_per_char']:.4f} bits/char, "
              f"perplexity {val['perplexity']:.2f}")
        if "calibration" in metrics:
            calibration = metrics["calibration"]
            print(f"calibrated: temperature {calibration['temperature']:.3f} (validation loss before "
                  f"{calibration['val_loss_before']:.4f})")
        print(f"stopped by {metrics['stopped_by']} after {metrics['steps']} steps, "
              f"{metrics['training_seconds']:.0f} s; model, metrics and curves in {args.out}")
    return 0


def _load(args: argparse.Namespace, kind: type):
    import elman

    model = elman.load(args.model)
    if not isinstance(model, kind):
        wanted = "a classifier (--task classify)" if kind.__name__ == "Classifier" else "a language model (--task lm)"
        raise UsageError(f"{args.model} holds a {model.config['task']!r} model; elman {args.command} needs {wanted}")
    return model


def _evaluate(args: argparse.Namespace) -> int:
    import elman
    from elman.inference import Classifier

    model = elman.load(args.model)
    if not isinstance(model, Classifier):
        return _evaluate_language_model(args, model)
    data = _read(args)
    metrics = model.evaluate(data)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        _print_metrics("test split" if data.splits is not None else "all rows", metrics)
        for label, scores in metrics["per_class"].items():
            if scores["support"]:
                print(f"  {label:<14} precision {scores['precision']:.3f}  recall {scores['recall']:.3f}  "
                      f"F1 {scores['f1']:.3f}  support {scores['support']}")
    return 0


def _evaluate_language_model(args: argparse.Namespace, model) -> int:
    from elman.data.language import read_lines_file
    from elman.data.text import read_text

    if model.kind == "text":
        metrics = model.evaluate_text(read_text(args.data), progress=not args.json)
    else:
        columns = model.config.get("columns") or {}
        metrics = model.evaluate_lines(read_lines_file(args.data, args.text_column or columns.get("text"),
                                                       args.label_column or columns.get("condition"),
                                                       args.split_column))
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        scope = f"{metrics['characters']} characters"
        if "lines" in metrics:
            part = "every line" if metrics["split"] == "all" else "the test split"
            scope += f" of {metrics['lines']} lines, {part} (each line's end counts as a character)"
        print(f"{metrics['loss']:.4f} nats/char, {metrics['bits_per_char']:.4f} bits/char, perplexity "
              f"{metrics['perplexity']:.2f} over {scope}"
              + (f" ({metrics['unknown_characters']} unknown to the model)" if metrics["unknown_characters"] else ""))
    return 0


def _texts_to_predict(args: argparse.Namespace) -> list[str]:
    """The TEXTs; or --input: a CSV with a header (.csv) or one text per line (any other file, or - for
    standard input); or, with neither, the lines piped in on standard input."""
    from elman.data.reader import read_labelled_csv
    from elman.data.text import read_lines

    if args.texts and args.input:
        raise UsageError("give either texts to classify or --input FILE, not both")
    if args.texts:
        return args.texts
    if args.input is None and sys.stdin.isatty():
        raise UsageError("give either texts to classify, --input FILE (a CSV with a header, or one text per line), "
                         "or texts on standard input (elman predict --model M < names.txt)")
    if args.input is not None and args.input.suffix.lower() == ".csv":
        return read_labelled_csv(args.input, args.text_column, require_labels=False).texts
    if args.input is not None and str(args.input) != "-":
        return read_lines(args.input)
    texts = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
    if not texts:
        raise UsageError("give either texts to classify or --input FILE; standard input held no text")
    return texts


def _write_predictions(predictions: list, file) -> None:
    writer = csv.writer(file)
    writer.writerow(["text", "prediction", "probability", "top_k", "unknown_characters"])
    for p in predictions:
        ranked = ";".join(f"{label}:{prob:.4f}" for label, prob in p.labels)
        best, probability = p.labels[0]
        writer.writerow([p.text, best, f"{probability:.4f}", ranked, "".join(p.unknown_characters)])


def _predict(args: argparse.Namespace) -> int:
    import elman
    from elman.files import atomic_output
    from elman.inference import Classifier

    if args.input and args.output and str(args.input) != "-" and args.output.resolve() == args.input.resolve():
        raise UsageError(f"--output {args.output} is the --input file; write the predictions to another file")
    model = elman.load(args.model)
    if isinstance(model, Classifier):
        if args.uniform_prior:
            raise UsageError("--uniform-prior is for a conditioned language model read as a classifier; this is a "
                             "classifier")
        predictions = model.predict(_texts_to_predict(args), top_k=args.top_k)
    else:  # a conditioned line model classifies by Bayes' rule; any other refuses with the reason
        predictions = model.classify(_texts_to_predict(args), top_k=args.top_k,
                                     prior="uniform" if args.uniform_prior else "training")
    if args.output:
        with atomic_output(args.output) as temporary, open(temporary, "w", newline="", encoding="utf-8") as file:
            _write_predictions(predictions, file)
        unknown = sum(bool(p.unknown_characters) for p in predictions)
        print(f"wrote {len(predictions)} predictions to {args.output}"
              + (f"; texts with characters the model never saw: {unknown} (column unknown_characters)"
                 if unknown else ""))
    elif args.json:
        print(json.dumps([p.as_json() for p in predictions], indent=2))
    elif not args.texts:  # a file or a pipe in: CSV out, for the next program
        _write_predictions(predictions, sys.stdout)
    else:
        for p in predictions:
            print(p.text + (f"  (never seen in training, read as unknown: {' '.join(p.unknown_characters)})"
                            if p.unknown_characters else ""))
            for rank, (label, prob) in enumerate(p.labels, start=1):
                print(f"  {rank}. {label:<14} {prob:6.1%}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from elman.inference import TextGenerator

    generator = _load(args, TextGenerator)
    samples = generator.generate(args.prime, args.length, args.temperature, args.top_k, args.top_p, args.num_samples,
                                 args.seed, args.condition, args.guidance)
    if args.json:
        print(json.dumps({"samples": samples}, indent=2, ensure_ascii=False))
    else:
        print(("\n" if generator.kind == "lines" else "\n\n").join(samples))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import elman
    from elman.inference import Classifier
    from elman.inference.inspection import plot_inspection

    model = elman.load(args.model)
    if isinstance(model, Classifier):
        if args.condition is not None:
            raise UsageError("--condition is for conditioned language models; this is a classifier")
        inspection = model.inspect(args.text)
    else:
        inspection = model.inspect(args.text, args.condition)
    if args.out:
        plot_inspection(inspection, args.out)
    if args.json:
        print(json.dumps({"task": inspection.task, "characters": inspection.characters, "labels": inspection.labels,
                          "probabilities": inspection.probabilities.tolist(), "hidden": inspection.hidden.tolist(),
                          "unknown_characters": inspection.unknown_characters,
                          "evidence": inspection.evidence and inspection.evidence.as_json()}))
        return 0
    if inspection.unknown_characters:
        print(f"never seen in training, read as unknown: {' '.join(inspection.unknown_characters)}")
    heading = "after prefix" if inspection.task == "classify" else "after character -> next character"
    print(f"{heading}:")
    for i, top in enumerate(inspection.top(3)):
        shown = "".join(inspection.characters[: i + 1]) if inspection.task == "classify" else inspection.characters[i]
        print(f"  {shown!r:<24} " + "  ".join(f"{label!r} {p:5.1%}" if inspection.task == "lm" else f"{label} {p:5.1%}"
                                              for label, p in top))
    if inspection.evidence is not None:
        first, second = inspection.evidence.labels
        print(f"evidence of the generative member, {first} against {second} (nats; > 0 speaks for {first}):")
        print("  " + "  ".join(f"{token} {ratio:+.2f}" for token, ratio in zip(inspection.evidence.tokens,
                                                                         inspection.evidence.log_ratios, strict=True))
              + f"   in all {sum(inspection.evidence.log_ratios):+.2f}")
    print(f"hidden state: {inspection.hidden.shape[1]} units over {len(inspection.characters)} characters"
          + (f"; figure in {args.out}" if args.out else "; --out FILE.png draws it"))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from elman.serve import create_app, load_models

    limits = Limits(**{f.name: getattr(args, f.name) for f in fields(Limits) if getattr(args, f.name) is not None})
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    app = create_app(load_models(args.model), limits)
    print(f"serving {', '.join(app.state.model_names)} on http://{args.host}:{args.port}/ (API under /v1, "
          f"OpenAPI at /openapi.json); Ctrl-C stops", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from elman.experiments import report

    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file; give a directory for the report")
    names = list(report.EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    results = report.run_experiments(names, args.out, quick=args.quick, seed=args.seed, progress=not args.json)
    path = report.write_report(results, args.out, args.quick)
    if args.json:
        print((args.out / "results.json").read_text(encoding="utf-8"))
    else:
        print(report.format_results(results))
        print(f"\nreport: {path}  (figures and results.json beside it)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from elman.layer.info import describe, runtime_info

    info = runtime_info()
    print(json.dumps(info, indent=2) if args.json else describe(info))
    return 0


def _export(args: argparse.Namespace) -> int:
    from elman.inference import load
    from elman.inference.export import export_onnx

    report = export_onnx(load(args.model), args.out)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(f"wrote {report.path}: inputs {', '.join(report.inputs)} -> {', '.join(report.outputs)}; "
              f"{report.rnn_nodes} ONNX RNN node(s), batch and length dynamic")
        print(f"parity with the model in onnxruntime ({report.probe}): max |difference| {report.max_difference:.2e}"
              " -> ok")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elman", description="Fast, trustworthy Elman recurrent networks.")
    parser.add_argument("--version", action="version", version=f"elman {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a classifier (CSV) or a character language model (text or CSV)")
    train.add_argument("--task", choices=["classify", "lm"], default="classify",
                       help="classify: texts -> labels; lm: next-character model for generation (default classify)")
    train.add_argument("--data", type=Path, required=True,
                       help="classify: CSV with texts and labels; lm: a text file, or a CSV/--lines file of lines")
    train.add_argument("--out", type=Path, help="directory for the checkpoint, metrics and figures (required, "
                       "except with --resume, whose directory it is)")
    train.add_argument("--resume", type=Path, metavar="DIR",
                       help="continue the run whose outputs are in DIR where it stopped; options not given are "
                       "the run's own (give --task and --data again)")
    train.add_argument("--overwrite", action="store_true",
                       help="train afresh into an --out that holds a run, replacing its model and training states")
    _add_columns(train)
    train.add_argument("--condition-column", dest="condition_column",
                       help="lm on CSV lines: steer the model by this column (e.g. nationality)")
    train.add_argument("--lines", action="store_true", help="lm: each line of the text file is one sequence")
    train.add_argument("--val-data", dest="val_data", type=Path,
                       help="lm: validation text (default: the end of --data)")
    _add_settings(train)
    train.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="score a trained model on a CSV (or text, for a language model)")
    evaluate.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    evaluate.add_argument("--data", type=Path, required=True,
                          help="classify: CSV (its test split, if it has one); lm: a text file, or a CSV of lines")
    _add_columns(evaluate)
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser("predict", help="classify texts with a trained classifier or conditioned "
                                  "language model")
    predict.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    predict.add_argument("texts", nargs="*", metavar="TEXT")
    predict.add_argument("--input", type=Path, help="texts to classify: a CSV with a header (.csv), or one text per "
                         "line (any other file; - or a pipe: standard input)")
    predict.add_argument("--output", type=Path, help="CSV file for the predictions (default: texts given as "
                         "arguments are printed; texts from --input or a pipe go to standard output as CSV)")
    predict.add_argument("--text-column", help="column of the texts in --input (default: surname or text)")
    predict.add_argument("--top-k", dest="top_k", type=positive_int, default=3,
                         help="labels shown per text, most probable first (default 3)")
    predict.add_argument("--uniform-prior", action="store_true", help="a conditioned language model (--task lm "
                         "--condition-column) classifies by Bayes' rule: take every condition as equally likely "
                         "beforehand (default: as often as in its training lines)")
    predict.add_argument("--json", action="store_true", help="print the predictions as JSON")
    predict.set_defaults(handler=_predict)

    generate = commands.add_parser("generate", help="sample text from a trained language model")
    generate.add_argument("--model", type=Path, required=True, help="checkpoint directory of an lm model")
    generate.add_argument("--prime", default="", help="text the samples begin with (default: none)")
    generate.add_argument("--length", type=int, help="characters to sample after the prime "
                          "(default 500; a line model stops at the end of its line)")
    generate.add_argument("--temperature", type=float, default=1.0, help="<1: safer, >1: wilder, 0: most likely")
    generate.add_argument("--top-k", dest="top_k", type=positive_int,
                          help="sample among the k most likely only (default: all)")
    generate.add_argument("--top-p", dest="top_p", type=float,
                          help="sample within this probability mass only, e.g. 0.95 (default: all)")
    generate.add_argument("--num-samples", dest="num_samples", type=positive_int, default=1,
                          help="samples to draw (default 1)")
    generate.add_argument("--seed", type=int, help="the same seed gives the same samples")
    generate.add_argument("--condition", help="the label to steer a conditioned model by, e.g. a nationality")
    generate.add_argument("--guidance", type=float, default=0.0,
                          help="with --condition: > 0 makes samples more typical of the condition (1-2 works "
                               "well; default 0, plain sampling)")
    generate.add_argument("--json", action="store_true", help="print the samples as JSON")
    generate.set_defaults(handler=_generate)

    inspect = commands.add_parser("inspect", help="see a model read a text: predictions and hidden states")
    inspect.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    inspect.add_argument("text", metavar="TEXT")
    inspect.add_argument("--condition", help="the label of a conditioned language model")
    inspect.add_argument("--out", type=Path, help="PNG file for the figure (probabilities and hidden-state heatmap)")
    inspect.add_argument("--json", action="store_true", help="print the arrays as JSON")
    inspect.set_defaults(handler=_inspect)

    serve = commands.add_parser("serve", help="serve models over HTTP: JSON API and a web page")
    serve.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR",
                       help="checkpoint directory, optionally named; repeat to serve several")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument("--threads", type=positive_int, help="torch threads (default: torch's choice)")
    for name, default in (("max_texts", "texts per predict request"), ("max_chars", "characters per text or prime"),
                          ("max_body_bytes", "bytes per request body"),
                          ("max_generate_length", "characters generated per sample"),
                          ("max_samples", "samples per generate request")):
        serve.add_argument("--" + name.replace("_", "-"), dest=name, type=positive_int,
                           help=f"limit: {default} (default {getattr(Limits(), name)})")
    serve.set_defaults(handler=_serve)

    demo = commands.add_parser("demo", help="re-run Elman's (1990) four experiments and write a report")
    demo.add_argument("--experiment", choices=["xor", "letters", "words", "sentences", "all"], default="all")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="report directory (default runs/demo)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the corpora and the weights (default 0)")
    demo.add_argument("--quick", action="store_true", help="fewer training passes")
    demo.add_argument("--json", action="store_true", help="print results.json instead of the summary")
    demo.set_defaults(handler=_demo)

    export = commands.add_parser("export", help="write a trained model as ONNX (checked in onnxruntime)")
    export.add_argument("--model", type=Path, required=True, help="model directory written by elman train")
    export.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    export.add_argument("--json", action="store_true", help="print the export's report as JSON")
    export.set_defaults(handler=_export)

    info = commands.add_parser("info", help="what the layer runs on: torch, compiled loops, bfloat16, threads, CUDA")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(handler=_info)
    return parser


def _describe(error: Exception) -> str:
    """The error's message; for the operating system's own errors, "path: reason" without "[Errno N]"."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        paths = f"{error.filename}" + (f" -> {error.filename2}" if error.filename2 is not None else "")
        return f"{paths}: {error.strerror}"
    return str(error)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (UsageError, OSError) as error:  # anything else is a bug: its traceback is shown
        print(f"elman {args.command}: error: {_describe(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
