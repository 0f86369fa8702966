"""ElmanRNN vs torch.nn.RNN vs the book's RNNCell loop: training step and inference, side by side.

Same weights and inputs for all three, one process, interleaved repetitions, median time, 2 threads by
default; then ElmanRNN's training step in mixed precision against float32. Prints tables and writes JSON.

    python benchmarks/layer.py [--threads 2] [--repeats 25] [--json benchmarks/results/layer.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from elman import ElmanRNN
from elman.layer import compiled_loops

# (batch, time, input, hidden); the first is the book's surname classifier
GRID = [
    (64, 20, 100, 64), (64, 20, 100, 256), (32, 64, 64, 512), (128, 50, 128, 128), (1, 200, 64, 128), (8, 100, 32, 64)
]
# ElmanRNN's training step in mixed precision (bfloat16 GEMMs under autocast) against float32: the
# language models' layers (2 x 512 and 3 x 640 above the first, batch 64, chunk 64)
MIXED_GRID = [(64, 64, 512, 512), (64, 64, 640, 640)]


class BookElmanRNN(nn.Module):
    """The loop of *NLP with PyTorch*, ch. 6: an nn.RNNCell stepped from Python, states stacked."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.rnn_cell = nn.RNNCell(input_size, hidden_size)
        self.hidden_size = hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (T, B, I) -> (T, B, H)
        hidden = torch.zeros(x.shape[1], self.hidden_size, dtype=x.dtype)
        states = []
        for t in range(x.shape[0]):
            hidden = self.rnn_cell(x[t], hidden)
            states.append(hidden)
        return torch.stack(states)


def build(batch: int, steps: int, inputs: int, hidden: int):
    torch.manual_seed(0)
    theirs = nn.RNN(inputs, hidden)
    ours = ElmanRNN(inputs, hidden)
    ours.load_state_dict(theirs.state_dict())
    book = BookElmanRNN(inputs, hidden)
    with torch.no_grad():
        book.rnn_cell.weight_ih.copy_(theirs.weight_ih_l0)
        book.rnn_cell.weight_hh.copy_(theirs.weight_hh_l0)
        book.rnn_cell.bias_ih.copy_(theirs.bias_ih_l0)
        book.rnn_cell.bias_hh.copy_(theirs.bias_hh_l0)
    x = torch.randn(steps, batch, inputs)
    return {
        "elman": lambda inp: ours(inp)[0],
        "nn.RNN": lambda inp: theirs(inp)[0],
        "book": book,
    }, {"elman": ours, "nn.RNN": theirs, "book": book}, x


def training_step(forward, module, x, weights):
    module.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    (forward(x) * weights).sum().backward()


def inference(forward, x):
    with torch.inference_mode():
        forward(x)


def time_interleaved(jobs: dict, repeats: int) -> dict[str, float]:
    """Median seconds per job; the jobs take turns so that machine noise hits them alike."""
    for job in jobs.values():
        for _ in range(3):
            job()
    samples = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def sgemm_gflops(size: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = time_interleaved({"mm": lambda: torch.mm(a, b)}, repeats)["mm"]
    return 2 * size**3 / seconds / 1e9


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def parse_arguments(description: str, json_path: str) -> argparse.Namespace:
    """--threads (set here), --repeats and --json, the options every timing script of this folder takes."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--json", type=Path, default=Path(json_path))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def main() -> None:
    args = parse_arguments(__doc__, "benchmarks/results/layer.json")

    peak = sgemm_gflops()
    print(f"torch {torch.__version__}, {args.threads} threads, compiled loop: {compiled_loops is not None}")
    print(f"measured sgemm (1024^3): {peak:.1f} GFLOP/s\n")
    header = (f"{'B':>4} {'T':>4} {'I':>4} {'H':>4} | {'mode':<9} | {'elman ms':>9} {'nn.RNN ms':>9} {'book ms':>9}"
              f" | {'vs nn.RNN':>9} {'vs book':>8} | {'GFLOP/s':>7}")
    print(header)
    print("-" * len(header))
    rows = []
    for batch, steps, inputs, hidden in GRID:
        forwards, modules, x = build(batch, steps, inputs, hidden)
        weights = torch.randn(steps, batch, hidden)
        forward_flops = 2 * steps * batch * (inputs * hidden + hidden * hidden)
        for mode in ("train", "inference"):
            if mode == "train":
                jobs = {
                    name: (lambda f=f, m=modules[name], x=x, w=weights: training_step(f, m, x, w))
                    for name, f in forwards.items()
                }
                flops = 3 * forward_flops  # forward, then gradients of inputs and of weights
            else:
                jobs = {name: (lambda f=f, x=x: inference(f, x)) for name, f in forwards.items()}
                flops = forward_flops
            times = time_interleaved(jobs, args.repeats)
            row = {
                "batch": batch, "time": steps, "input": inputs, "hidden": hidden, "mode": mode,
                "seconds": times,
                "speedup_vs_nn_rnn": times["nn.RNN"] / times["elman"],
                "speedup_vs_book": times["book"] / times["elman"],
                "elman_gflops": flops / times["elman"] / 1e9,
            }
            rows.append(row)
            print(f"{batch:>4} {steps:>4} {inputs:>4} {hidden:>4} | {mode:<9} | {times['elman'] * 1e3:>9.3f}"
                  f" {times['nn.RNN'] * 1e3:>9.3f} {times['book'] * 1e3:>9.3f} | {row['speedup_vs_nn_rnn']:>8.2f}x"
                  f" {row['speedup_vs_book']:>7.2f}x | {row['elman_gflops']:>7.1f}")

    summary = {}
    print()
    for mode, target in (("train", 1.5), ("inference", 2.0)):
        speedups = [r["speedup_vs_nn_rnn"] for r in rows if r["mode"] == mode]
        book = [r["speedup_vs_book"] for r in rows if r["mode"] == mode]
        summary[mode] = {"geomean_vs_nn_rnn": geomean(speedups), "min_vs_nn_rnn": min(speedups),
                         "geomean_vs_book": geomean(book), "target_geomean": target}
        verdict = "meets" if geomean(speedups) >= target and min(speedups) >= 0.9 else "MISSES"
        print(f"{mode:<9}: geomean {geomean(speedups):.2f}x nn.RNN (target {target}x), slowest point "
              f"{min(speedups):.2f}x (floor 0.9x), geomean {geomean(book):.2f}x the book's loop -> {verdict}")

    print("\nElmanRNN training step, bfloat16 autocast against float32:")
    mixed_rows = []
    for batch, steps, inputs, hidden in MIXED_GRID:
        torch.manual_seed(0)
        layer, x = ElmanRNN(inputs, hidden), torch.randn(steps, batch, inputs)
        weights = torch.randn(steps, batch, hidden)

        def step(enabled, layer=layer, x=x, weights=weights):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                training_step(lambda inp: layer(inp)[0], layer, x, weights)

        times = time_interleaved({"float32": lambda: step(False), "bfloat16": lambda: step(True)}, args.repeats)
        mixed_rows.append({"batch": batch, "time": steps, "input": inputs, "hidden": hidden, "seconds": times,
                           "speedup": times["float32"] / times["bfloat16"]})
        print(f"{batch:>4} {steps:>4} {inputs:>4} {hidden:>4} | float32 {times['float32'] * 1e3:8.2f} ms | "
              f"bfloat16 {times['bfloat16'] * 1e3:8.2f} ms | {mixed_rows[-1]['speedup']:.2f}x")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "torch": torch.__version__, "threads": args.threads, "machine": platform.processor() or platform.machine(),
        "compiled_loop": compiled_loops is not None, "sgemm_gflops": peak, "rows": rows, "summary": summary,
        "mixed_precision": mixed_rows,
    }, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
