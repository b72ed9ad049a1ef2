"""The errors Tessera raises on purpose, and the exit codes the CLI maps them to.

    0  success
    1  `tessera verify` only: the file is not traced to a generation (no mark, manifest or ledger match)
    2  bad input (arguments, files, checkpoints, configs): InputError; also a request too large for
       the machine's memory (`out_of_memory`), with what to ask for instead, or for its disk
       or permissions (`environment_error`)
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


OUT_OF_MEMORY_HINT = (
    "ask for less at once: a smaller --width / --height, a shorter --duration-s, fewer prompts per call, "
    "--fast; when training, a smaller --batch or --gradient-checkpointing"
)


def out_of_memory(e: BaseException) -> bool:
    """Whether `e` is a failed memory allocation: Python's MemoryError, torch's CPU allocator ("can't allocate
    memory", "not enough memory") or its GPU one (torch.OutOfMemoryError). Not a bug: the request is too
    large for this machine."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text)


def environment_error(e: BaseException) -> str | None:
    """What to do when `e` is the machine refusing a file operation (disk or quota full, a read-only file
    system, no permission), or None. Not a bug: the place or the space has to change."""
    import errno

    if not isinstance(e, OSError):
        return None
    where = f" for {e.filename}" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left{where} ({e.strerror}); free some space or choose another --out"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        where = f" {e.filename}" if e.filename else " a file"
        return (
            f"not allowed to use{where} ({e.strerror}); choose files and folders you may use, or fix their permissions"
        )
    return None
