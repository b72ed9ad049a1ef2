"""The settings of the run a resumable command's --out folder holds, so a re-run resumes only that run.

`tessera prepare`, `tessera prefer` and `tessera distill` write their partial work (latent shards,
judged samples, teacher paths, training states) into their --out folder as they go and pick it up
when started again. Started again with another model or other settings, they would mix two runs:
samples of one model would tune another. `claim` records a run's settings (a model as the SHA-256 of
its file) in a JSON file the first time and refuses any other run in that folder afterwards, naming
what differs. Settings listed as `free` (how often to save, how many training steps) may change
between runs: a longer run continues the shorter one.

Two runs at once in one folder (a command started twice, a retry while the first still runs) would
interleave their writes: `exclusive` holds a lock on the folder for the life of a run, and the
second is refused, naming the first's process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tessera.errors import InputError

LOCK = ".tessera.lock"  # held by the run in a folder (`exclusive`)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all (a temporary beside it, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _short(v) -> str:
    text = json.dumps(v)
    return text if len(text) <= 24 else text[:10] + "…" + text[-10:]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def differences(have: dict, want: dict, free: Iterable[str] = ()) -> list[str]:
    """'key old -> new' for every (nested: 'dit.width') setting that differs, keys in `free` left out."""
    have, want, skip = _flat(have), _flat(json.loads(json.dumps(want))), set(free)
    keys = sorted(k for k in set(have) | set(want) if k not in skip and have.get(k) != want.get(k))
    return [f"{k} {_short(have.get(k))} -> {_short(want.get(k))}" for k in keys]


def listed(diff: list[str], most: int = 6) -> str:
    return ", ".join(diff[:most]) + (f" and {len(diff) - most} more" if len(diff) > most else "")


def claim(out: Path, name: str, settings: dict, free: Iterable[str] = ()) -> None:
    """Record `settings` (JSON-able) in `out/name`, or raise InputError when it records other ones.

    Keys in `free` are left out of the comparison; the first run's values stay in the file.
    """
    path = out / name
    want = json.loads(json.dumps(settings))  # tuples become lists, as they read back
    if not path.exists():
        write_atomic(path, json.dumps(want, indent=1, sort_keys=True) + "\n")
        return
    try:
        have = json.loads(path.read_text())
        if not isinstance(have, dict):
            raise ValueError(f"a JSON {type(have).__name__}, not an object")
    except (OSError, ValueError) as e:
        raise InputError(
            f"{path} is not readable JSON settings ({e}); use a new --out, or delete the folder to start again"
        ) from e
    diff = differences(have, want, free)
    if diff:
        raise InputError(
            f"{out} holds a run with other settings ({listed(diff)}); run again with the same arguments to "
            "resume it, use a new --out, or delete the folder to start again"
        )


@contextlib.contextmanager
def exclusive(out: str | Path, command: str) -> Iterator[None]:
    """Hold `out/.tessera.lock` while the body runs; InputError when another process holds it.

    The kernel drops the lock when the holder exits, so a crash or a kill never leaves the folder
    locked. Only the first process of a distributed run (RANK 0) takes it. A folder that cannot be
    made is left to the command, which says why; a folder made here and left empty (a run refused
    for its input) is removed again.
    """
    out = Path(out)
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / LOCK, "a+")  # noqa: SIM115 - held until the run ends
    except OSError:
        yield
        return
    try:
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise InputError(
                    f"another tessera {command} is running in {out} ({holder}); wait for it to end, or use another --out"
                ) from None
            handle.truncate(0)
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            yield
    finally:
        if made and [p.name for p in out.iterdir()] == [LOCK]:  # a run that made nothing leaves no folder
            (out / LOCK).unlink()
            out.rmdir()
