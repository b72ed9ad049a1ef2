"""The errors Tessera raises on purpose, and the exit codes the CLI maps them to.

    0  success
    1  `tessera verify` only: the file is not traced to a generation (no mark, manifest or ledger match)
    2  bad input (arguments, files, checkpoints, configs): InputError
    3  refused by the prompt filter: UnsafePromptError
    4  internal error (a bug): a one-line message and a hint to report it

Every message says what was expected, what was given and what to do.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_INPUT = 2
EXIT_UNSAFE = 3
EXIT_INTERNAL = 4


class TesseraError(Exception):
    """Base class of the errors Tessera raises on purpose."""

    exit_code = EXIT_INTERNAL


class InputError(TesseraError, ValueError):
    """Bad input from the caller (an argument, a file, a checkpoint): one line, exit code 2."""

    exit_code = EXIT_INPUT


class UnsafePromptError(TesseraError):
    """The prompt filter refused a request before any compute; `category` names the rule."""

    exit_code = EXIT_UNSAFE

    def __init__(self, category: str, message: str):
        super().__init__(message)
        self.category = category
