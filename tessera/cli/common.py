"""What every CLI command shares: the user-error type, argument checks, model loading and a
progress bar on stderr."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

from tessera.config import MAX_GUIDANCE, MAX_STEPS
from tessera.config import MAX_SEED as SEED_MAX  # noqa: F401  (re-exported: the CLI checks the pipeline's limit)
from tessera.errors import InputError

UsageError = InputError  # bad input from the user: printed as one line, exit code 2


def check_int(flag: str, value: int | None, lo: int, hi: int, hint: str = "") -> None:
    """InputError unless `value` is None or an integer in lo..hi (both included)."""
    if value is not None and not lo <= value <= hi:
        raise UsageError(f"{flag} {value} is outside the accepted range {lo}–{hi}{'; ' + hint if hint else ''}")


def check_side(flag: str, value: int | None) -> None:
    """InputError unless `value` is None or a frame side the pipeline supports (multiples are checked by the model)."""
    from tessera.geometry import MAX_SIDE_PX, MIN_SIDE_PX

    if value is not None and not MIN_SIDE_PX <= value <= MAX_SIDE_PX:
        near = min(max(value, MIN_SIDE_PX), MAX_SIDE_PX)
        raise UsageError(
            f"{flag} {value} px is outside the supported {MIN_SIDE_PX}–{MAX_SIDE_PX} px "
            f"(the watermark needs {MIN_SIDE_PX}); try {near}"
        )


def check_number(flag: str, value: float | None, lo: float, hi: float, low_open: bool = False, hint: str = "") -> None:
    """InputError unless `value` is None or a finite number in [lo, hi] ((lo, hi] with low_open)."""
    if value is None:
        return
    above = value > lo if low_open else value >= lo
    if not (math.isfinite(value) and above and value <= hi):
        interval = f"{'(' if low_open else '['}{lo:g}, {hi:g}]"
        raise UsageError(
            f"{flag} {value} is outside the accepted range {interval} (a finite number){'; ' + hint if hint else ''}"
        )


def check_sampling(args) -> None:
    """--seed, --steps, --guidance, --width, --height and --checkpoint, as `generate` and `edit` take them."""
    check_int("--seed", args.seed, 0, SEED_MAX, "seeds are 64-bit")
    if args.steps is not None:
        check_int("--steps", args.steps, 1, MAX_STEPS, "25 is the default")
    if args.guidance is not None:
        check_number("--guidance", args.guidance, 0.0, MAX_GUIDANCE, hint="4 is the default, 1 turns guidance off")
    check_side("--width", args.width)
    check_side("--height", args.height)
    if args.checkpoint is not None and not args.checkpoint:
        raise UsageError("--checkpoint is empty; pass a .safetensors generation checkpoint or leave it out")


def check_scheduler(flag: str, name: str) -> None:
    """InputError unless `name` is a registered solver."""
    from tessera.schedulers import SCHEDULERS

    if name not in SCHEDULERS:
        raise UsageError(f"{flag} {name!r} is unknown; choose one of {', '.join(sorted(SCHEDULERS))}")


def check_device(flag: str, name: str | None) -> None:
    """InputError unless `name` is None (the default: a GPU when there is one), "cpu", or a CUDA device this machine has."""
    import torch

    if name is None:
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"{flag} {name!r} is not a device; use cpu or cuda (or leave it out)") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"{flag} {name!r}: only cpu and cuda are supported")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{flag} {name}: this machine has no CUDA GPU; use cpu or leave {flag} out")


def check_new_file(flag: str, path: str | None) -> None:
    """InputError unless `path` is None or names a file (new or existing) in an existing folder."""
    if path is None:
        return
    try:
        ok = bool(path) and "\x00" not in path and Path(path).parent.is_dir() and not Path(path).is_dir()
    except OSError:  # a name too long to look up
        ok = False
    if not ok:
        raise UsageError(f"{flag} {path[:200]!r} must be a file in an existing folder; choose another path")


def check_folder(flag: str, path: str | None) -> None:
    """InputError unless `path` is None or can be (or already is) a folder: not a file, no NUL byte."""
    if path is None:
        return
    try:
        ok = bool(path) and "\x00" not in path and not Path(path).is_file()
        ok = ok and not any(p.exists() and not p.is_dir() for p in Path(path).parents)
    except OSError:
        ok = False
    if not ok:
        raise UsageError(f"{flag} {path[:200]!r} cannot be a folder (a file is in the way); choose another path")


def load_pipeline(path: str | None, **components):
    """The generation model at `path` (default: the bundled one).

    A checkpoint given by the user that cannot be read or built — damaged bytes, a config that is not
    JSON or has wrong types or values, a text-encoder folder that is missing — is bad input: one line
    naming the file, exit code 2. A failure of the bundled model is a bug and propagates.
    """
    from tessera.pipeline import TesseraPipeline

    if path is None:
        return TesseraPipeline.from_single_file(None, **components)
    try:
        return TesseraPipeline.from_single_file(path, **components)
    except InputError:
        raise
    except Exception as e:
        detail = " ".join(str(e).split())[:300]
        raise UsageError(
            f"checkpoint {path} cannot be built from its config ({type(e).__name__}: {detail}); "
            "retrain or re-download it, or pass another --checkpoint"
        ) from e


def progress(desc: str):
    from tqdm import tqdm

    bar = tqdm(total=None, desc=desc, file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


class _StderrHandler(logging.StreamHandler):
    """Log lines to whatever sys.stderr is at the time (stdout is the JSON channel)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def log_to_stderr() -> None:
    """tessera's INFO log lines (progress of long commands) to stderr, once."""
    logger = logging.getLogger("tessera")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
