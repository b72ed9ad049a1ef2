"""The settings of the run a resumable command's --out folder holds, so a re-run resumes only that run.

`tessera prepare`, `tessera prefer` and `tessera distill` write their partial work (latent shards,
judged samples, teacher paths, training states) into their --out folder as they go and pick it up
when started again. Started again with another model or other settings, they would mix two runs:
samples of one model would tune another. `claim` records a run's settings (a model as the SHA-256 of
its file) in a JSON file the first time and refuses any other run in that folder afterwards, naming
what differs. Settings listed as `free` (how often to save, how many training steps) may change
between runs: a longer run continues the shorter one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tessera.errors import InputError


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
