"""torch.compile around ElmanRNN: the layer compiled against eager on benchmarks/layer.py's grid, and a whole
surname classifier (the project's default configuration) compiled against eager.

The layer's recurrence is one opaque operator per layer and direction (elman::rnn_direction), so compiling the
layer alone can gain only the little around it; a model compiled whole lets inductor fuse its embedding,
pooling and head. Contenders take turns in one process; median times, 2 threads by default; one warm-up call
per shape compiles before timing. Prints a table and writes JSON.

    python benchmarks/compiled.py [--threads 2] [--repeats 25] [--json benchmarks/results/compiled.json]
"""

from __future__ import annotations

import json

import torch

from elman import ElmanRNN
from elman.models.classifier import ClassifierConfig, SequenceClassifier
from layer import GRID, parse_arguments, time_interleaved, training_step


def layer_rows(repeats: int) -> list[dict]:
    rows = []
    for batch, steps, inputs, hidden in GRID:
        for mode, times in layer_times(batch, steps, inputs, hidden, repeats).items():
            rows.append({"batch": batch, "time": steps, "input": inputs, "hidden": hidden, "mode": mode,
                         "seconds": times, "speedup": times["eager"] / times["compiled"]})
    return rows


def layer_times(batch: int, steps: int, inputs: int, hidden: int, repeats: int) -> dict[str, dict[str, float]]:
    # each point compiles the same forward anew: without a reset dynamo reaches its limit of 8 recompilations
    # within the grid, and the rest of it runs eager
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = ElmanRNN(inputs, hidden)
    compiled = torch.compile(layer, dynamic=False)
    x, weights = torch.randn(steps, batch, inputs), torch.randn(steps, batch, hidden)
    forwards = {"eager": lambda inp: layer(inp)[0], "compiled": lambda inp: compiled(inp)[0]}
    training = {name: (lambda f=f: training_step(f, layer, x, weights)) for name, f in forwards.items()}
    inference = {name: (lambda f=f: _inference(f, x)) for name, f in forwards.items()}
    return {"train": time_interleaved(training, repeats), "inference": time_interleaved(inference, repeats)}


def _inference(forward, x) -> None:
    with torch.inference_mode():
        forward(x)


def classifier_rows(repeats: int) -> list[dict]:
    """The default surname classifier (88 characters, 18 classes) on batches of 64 names of 12 characters."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = SequenceClassifier(ClassifierConfig(vocab_size=88, num_classes=18))
    compiled = torch.compile(model, dynamic=False)
    ids = torch.randint(1, 88, (64, 12))
    lengths = torch.randint(4, 13, (64,))
    lengths[0] = 12
    labels = torch.randint(0, 18, (64,))
    rows = []
    for mode in ("train", "inference"):
        model.train(mode == "train")

        def job(run, mode=mode):
            if mode == "inference":
                with torch.inference_mode():
                    run(ids, lengths)
                return
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(run(ids, lengths), labels).backward()

        times = time_interleaved({"eager": lambda: job(model), "compiled": lambda: job(compiled)}, repeats)
        rows.append({"model": "classifier", "mode": mode, "seconds": times,
                     "speedup": times["eager"] / times["compiled"]})
    return rows


def main() -> None:
    args = parse_arguments(__doc__, "benchmarks/results/compiled.json")
    print(f"torch {torch.__version__}, {args.threads} threads\n")
    print(f"{'B':>4} {'T':>4} {'I':>4} {'H':>4} | {'mode':<9} | {'eager ms':>9} {'compiled ms':>11} | compiled speed")
    layer = layer_rows(args.repeats)
    for row in layer:
        print(f"{row['batch']:>4} {row['time']:>4} {row['input']:>4} {row['hidden']:>4} | {row['mode']:<9} | "
              f"{row['seconds']['eager'] * 1e3:>9.3f} {row['seconds']['compiled'] * 1e3:>11.3f} | "
              f"{row['speedup']:.2f}x")
    print("\nwhole classifier (default configuration, 64 names of <= 12 characters):")
    classifier = classifier_rows(args.repeats)
    for row in classifier:
        print(f"  {row['mode']:<9} eager {row['seconds']['eager'] * 1e3:8.3f} ms, compiled "
              f"{row['seconds']['compiled'] * 1e3:8.3f} ms: {row['speedup']:.2f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"torch": torch.__version__, "threads": args.threads, "layer": layer,
                                     "classifier": classifier}, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
