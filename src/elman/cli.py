"""The ``elman`` command line: argument parsing and printing only; the work happens in the packages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from elman import __version__


def _demo(args: argparse.Namespace) -> int:
    from elman.experiments import report

    names = list(report.EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    results = report.run_experiments(names, args.out, quick=args.quick, seed=args.seed, progress=not args.json)
    path = report.write_report(results, args.out, args.quick)
    if args.json:
        print((args.out / "results.json").read_text(encoding="utf-8"))
    else:
        print(report.format_results(results))
        print(f"\nreport: {path}  (figures and results.json beside it)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elman", description="Fast, trustworthy Elman recurrent networks.")
    parser.add_argument("--version", action="version", version=f"elman {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="re-run Elman's (1990) four experiments and write a report")
    demo.add_argument("--experiment", choices=["xor", "letters", "words", "sentences", "all"], default="all")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="report directory (default runs/demo)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the corpora and the weights (default 0)")
    demo.add_argument("--quick", action="store_true", help="fewer training passes (all four in under a minute)")
    demo.add_argument("--json", action="store_true", help="print results.json instead of the summary")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
