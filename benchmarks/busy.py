"""Training on a busy machine: the same short language-model run quiet, then beside busy-looping processes.

Each run is `elman train --task lm` with default options for --seconds of budget on tiny-shakespeare, in its
own process; the busy case starts --busy processes that spin (`while True: pass`) for the whole run. Prints
steps and characters per second of each, and the busy run's share of the quiet run's steps (a fair share
with one busy process per core is 0.5), and writes JSON.

    python benchmarks/busy.py [--seconds 40] [--busy 2] [--data ../shared/data/tinyshakespeare.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SPIN = "while True: pass"


def train(data: Path, seconds: float, busy: int) -> dict:
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
    try:
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([sys.executable, "-m", "elman", "train", "--task", "lm", "--data", str(data), "--out", out,
                            "--time-budget", str(seconds)], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            metrics = json.loads((Path(out) / "metrics.json").read_text())
            log = (Path(out) / "train.log").read_text()
    finally:
        for spinner in spinners:
            spinner.kill()
    threads = next((line for line in log.splitlines() if line.startswith("threads:")), "threads: ?")
    warned = any("throughput fell" in line for line in log.splitlines())
    return {"busy_processes": busy, "steps": metrics["steps"], "seconds": metrics["training_seconds"],
            "threads": threads, "warned": warned}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 1, help="spinning processes (default: cores)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/tinyshakespeare.txt"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/busy.json"))
    args = parser.parse_args()
    runs = [train(args.data, args.seconds, busy) for busy in (0, args.busy)]
    for run in runs:
        print(f"{run['busy_processes']} busy processes: {run['steps']:>5} steps in {run['seconds']:.0f} s; "
              f"{run['threads']}{'; warned of the slowdown' if run['warned'] else ''}")
    share = runs[1]["steps"] / runs[0]["steps"]
    fair = 1 / (1 + args.busy / (os.cpu_count() or 1))
    print(f"busy / quiet steps: {share:.2f} (a fair share of the cores: {fair:.2f})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"runs": runs, "share": share}, indent=2))


if __name__ == "__main__":
    main()
