"""Where bfloat16 autocast pays on the CPU: ElmanRNN's time in float32 and with bfloat16 GEMMs, by shape.

For each batch and width, one layer (input 64; T 100 at 1-4 rows, else 50) runs inference and a training step
(forward and backward) in float32 and under ``torch.autocast("cpu", torch.bfloat16)`` with the bfloat16 loops
forced on, the two taking turns in one process. ``bfloat16_pays`` in elman/layer/rnn.py is the rule read off
this table (docs/measurements.md, "bfloat16 by shape"). Prints milliseconds and writes JSON.

    python benchmarks/bfloat16.py [--threads 2] [--repeats 9] [--json benchmarks/results/bfloat16.json]
"""

from __future__ import annotations

import json

import torch

from elman import ElmanRNN
from elman.layer import compiled_loops, rnn
from layer import parse_arguments, time_interleaved, training_step

BATCHES = [1, 2, 4, 8, 16, 32, 64, 128]
WIDTHS = [128, 256, 512, 1024]


def timed(layer: ElmanRNN, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds of inference and of a training step, float32 and bfloat16, taking turns."""
    weights = torch.randn(x.shape[0], x.shape[1], layer.hidden_size)
    pays = rnn.bfloat16_pays

    def run(mode: str, bfloat16: bool) -> None:
        rnn.bfloat16_pays = lambda batch, hidden: bfloat16  # the rule under test, forced either way
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
                if mode == "train":
                    training_step(lambda inp: layer(inp)[0], layer, x, weights)
                else:
                    with torch.inference_mode():
                        layer(x)
        finally:
            rnn.bfloat16_pays = pays

    jobs = {f"{mode} {precision}": (lambda m=mode, b=precision == "bfloat16": run(m, b))
            for mode in ("inference", "train") for precision in ("float32", "bfloat16")}
    return time_interleaved(jobs, repeats)


def main() -> None:
    args = parse_arguments(__doc__, "benchmarks/results/bfloat16.json")
    panels = compiled_loops is not None and compiled_loops.has_panels()
    print(f"torch {torch.__version__}, {args.threads} threads, AVX-512 panels: {panels}")
    print(f"{'B x H':>10} | {'inference f32 / bf16 ms':>24} | {'training f32 / bf16 ms':>24} | rule says")
    rows = []
    for hidden in WIDTHS:
        for batch in BATCHES:
            torch.manual_seed(0)
            layer, x = ElmanRNN(64, hidden), torch.randn(100 if batch <= 4 else 50, batch, 64)
            times = timed(layer, x, args.repeats)
            rows.append({"batch": batch, "hidden": hidden, "seconds": times})
            cells = [f"{times[f'{m} float32'] * 1e3:10.3f} / {times[f'{m} bfloat16'] * 1e3:<10.3f}"
                     for m in ("inference", "train")]
            rule = "bfloat16" if rnn.bfloat16_pays(batch, hidden) else "float32"
            print(f"{f'{batch} x {hidden}':>10} | {cells[0]:>24} | {cells[1]:>24} | {rule}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"threads": args.threads, "panels": panels, "rows": rows}, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
