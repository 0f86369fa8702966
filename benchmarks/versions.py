"""This checkout's ElmanRNN against another checkout's, on benchmarks/layer.py's grid, side by side.

Each round runs layer.py once per checkout, each in its own process, the checkouts taking turns; per grid point
and mode it prints the median over the rounds of ElmanRNN's time in each, and their ratio (> 1: this checkout
is faster). nn.RNN's times, measured in both processes, show how noisy the machine was.

    git worktree add /tmp/base <commit> && (cd /tmp/base && python setup.py build_ext --inplace)
    python benchmarks/versions.py --baseline /tmp/base/src [--rounds 3] [--json benchmarks/results/versions.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_layer_benchmark(source: Path, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "layer.json"
        env = {**os.environ, "PYTHONPATH": str(source)}
        subprocess.run([sys.executable, str(HERE / "layer.py"), "--repeats", str(repeats), "--json", str(output)],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(output.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout's src directory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/versions.json"))
    args = parser.parse_args()
    sources = {"this": HERE.parent / "src", "baseline": args.baseline.resolve()}
    runs = {name: [] for name in sources}
    for round_ in range(args.rounds):
        for name, source in sources.items():
            print(f"round {round_ + 1}/{args.rounds}: {name} ({source})", file=sys.stderr, flush=True)
            runs[name].append(run_layer_benchmark(source, args.repeats))

    def median(name: str, index: int, who: str) -> float:
        return statistics.median(run["rows"][index]["seconds"][who] for run in runs[name])

    header = (f"{'B':>4} {'T':>4} {'I':>4} {'H':>4} | {'mode':<9} | {'this ms':>8} {'baseline':>8} {'ratio':>6} | "
              f"{'nn.RNN ms (this / baseline run)':>32}")
    print(header)
    print("-" * len(header))
    rows = []
    for index, row in enumerate(runs["this"][0]["rows"]):
        this, baseline = median("this", index, "elman"), median("baseline", index, "elman")
        theirs = (median("this", index, "nn.RNN"), median("baseline", index, "nn.RNN"))
        rows.append({key: row[key] for key in ("batch", "time", "input", "hidden", "mode")}
                    | {"this": this, "baseline": baseline, "speedup": baseline / this, "nn_rnn": theirs})
        print(f"{row['batch']:>4} {row['time']:>4} {row['input']:>4} {row['hidden']:>4} | {row['mode']:<9} | "
              f"{this * 1e3:>8.3f} {baseline * 1e3:>8.3f} {baseline / this:>5.2f}x | "
              f"{theirs[0] * 1e3:>15.3f} / {theirs[1] * 1e3:.3f}")
    ratios = [row["speedup"] for row in rows]
    print(f"\ngeomean this/baseline speed: {statistics.geometric_mean(ratios):.3f}x, slowest point {min(ratios):.3f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"baseline": str(args.baseline), "rounds": args.rounds, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
