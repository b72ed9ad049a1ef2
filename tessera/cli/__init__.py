"""The `tessera` command: generate | verify | train | prepare | eval.

Every user error (bad prompt, size, duration, checkpoint, output path) prints one line
saying what was wrong and what to do, and exits with code 2; no tracebacks. Each command
lives in its own module with its parser (`add_parser`) and its handler.
"""

from __future__ import annotations

import argparse
import sys

from tessera.cli import distill, evaluate, generate, prepare, train, verify
from tessera.errors import TesseraError

COMMANDS = (generate, verify, train, distill, prepare, evaluate)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tessera", description="Text-to-video with spacetime patches.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TesseraError as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tessera: interrupted", file=sys.stderr)
        return 130
