"""The `tessera` command: generate | edit | verify | ledger | train | distill | prefer | prepare | eval | serve | keys.

Exit codes (see `tessera.errors`): 0 success; 1 `verify` found no watermark; 2 bad input
(arguments, files, checkpoints, configs), a request too large for the machine's memory, or a
full disk or a folder it may not write, one line saying what to change; 3 refused by the
prompt filter; 4 internal error, one line and a hint to report it (the traceback only with
TESSERA_DEBUG=1); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). Each command lives in
its own module with its parser (`add_parser`) and its handler, and validates every argument
before any work.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback

from tessera.cli import distill, edit, evaluate, generate, keys, ledger, prefer, prepare, serve, train, verify
from tessera.errors import (
    EXIT_INPUT,
    EXIT_INTERNAL,
    OUT_OF_MEMORY_HINT,
    TesseraError,
    environment_error,
    out_of_memory,
)

COMMANDS = (generate, edit, verify, ledger, train, distill, prefer, prepare, evaluate, serve, keys)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143  # 128 + SIGTERM
REPORT_HINT = "this is a bug in tessera; rerun with TESSERA_DEBUG=1 for the traceback and report it"


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that `finally` blocks clean up as for Ctrl-C."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tessera", description="Text-to-video with spacetime patches.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def one_line(e: BaseException) -> str:
    """An exception's message on one line (some library messages span several)."""
    return " ".join(str(e).split())


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (argparse's own errors and --help included)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse printed its usage line (exit 2) or the help (exit 0)
        return e.code if isinstance(e.code, int) else EXIT_INPUT
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    previous = signal.SIG_DFL if previous is None else previous
    try:
        return args.func(args)
    except TesseraError as e:
        print(f"tessera: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tessera: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("tessera: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as e:  # one line; the traceback only when asked for
        if os.environ.get("TESSERA_DEBUG") == "1":
            traceback.print_exc()
        if out_of_memory(e):  # too large for this machine, not a bug
            print(f"tessera: error: out of memory ({one_line(e)[:200]}); {OUT_OF_MEMORY_HINT}", file=sys.stderr)
            return EXIT_INPUT
        place = environment_error(e)  # a full disk, a read-only folder: the place has to change, not the code
        if place:
            print(f"tessera: error: {place}", file=sys.stderr)
            return EXIT_INPUT
        print(f"tessera: internal error: {type(e).__name__}: {one_line(e)[:300]} ({REPORT_HINT})", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
