"""The ``elman`` command line: argument parsing and printing only; the work happens in the packages."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from elman import __version__


def _demo(args: argparse.Namespace) -> int:
    from elman.experiments import xor

    config = xor.XorConfig(seed=args.seed)
    if args.quick:
        config.passes = 60
    result = xor.run(config, progress=not args.json)
    print(json.dumps(asdict(result), indent=2) if args.json else xor.format_result(result))
    return 0 if result.sawtooth else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elman", description="Fast, trustworthy Elman recurrent networks.")
    parser.add_argument("--version", action="version", version=f"elman {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="train Elman's (1990) temporal-XOR network and show the error sawtooth")
    demo.add_argument("--seed", type=int, default=0, help="seed of the stream and the weights (default 0)")
    demo.add_argument("--quick", action="store_true", help="fewer training passes")
    demo.add_argument("--json", action="store_true", help="print the result as JSON")
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
