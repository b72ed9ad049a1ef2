"""`tessera ledger export | prune | import`: records out as JSON lines, old ones removed, or an old registry signed in."""

from __future__ import annotations

import argparse
import json
import math
from datetime import UTC, datetime, timedelta

from tessera.cli.common import UsageError

MAX_DAYS = 36_500  # a century: older than any record
SHOWN_SKIPS = 20  # skipped lines listed in the import's JSON


def _ledger(args: argparse.Namespace):
    from tessera.safety.keys import load_key
    from tessera.safety.ledger import Ledger

    try:
        key = load_key(create=False)
    except FileNotFoundError:
        key = None  # export and prune do not need to check signatures
    return Ledger(args.ledger, key=key)


def cmd_export(args: argparse.Namespace) -> int:
    try:
        n = _ledger(args).export(args.output)
    except OSError as e:
        raise UsageError(f"cannot write {args.output} ({e.strerror}); choose another path") from e
    print(json.dumps({"exported": n, "output": args.output}))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    days = args.older_than_days
    if not (math.isfinite(days) and 0 <= days <= MAX_DAYS):
        raise UsageError(f"--older-than-days must be a number in 0..{MAX_DAYS}, got {days}; e.g. 365 keeps a year")
    before = datetime.now(UTC) - timedelta(days=days)
    print(json.dumps({"pruned": _ledger(args).prune(before), "before": before.isoformat(timespec="seconds")}))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tessera.safety.keys import load_key, tessera_home
    from tessera.safety.ledger import LEGACY_REGISTRY, Ledger

    source = Path(args.source) if args.source else tessera_home() / LEGACY_REGISTRY
    if not source.is_file():
        raise UsageError(f"{source} is not a file; pass the old registry (fingerprints.jsonl) to import")
    try:
        result = Ledger(args.ledger, key=load_key()).import_legacy(source, store_prompt=args.store_prompt)
    except (OSError, UnicodeError) as e:
        raise UsageError(f"cannot read {source} ({e}); pass a readable JSON-lines file") from e
    if result["skipped"] and not (result["imported"] or result["already_present"]):
        n, why = result["skipped"][0]
        raise UsageError(
            f"no line of {source} is a registry record (line {n}: {why}); "
            "pass the fingerprints.jsonl an earlier release wrote"
        )
    skipped = result["skipped"]
    result["skipped"] = [{"line": n, "why": why} for n, why in skipped[:SHOWN_SKIPS]]
    result["skipped_lines"] = len(skipped)  # all of them; the first SHOWN_SKIPS are listed
    print(json.dumps({**result, "source": str(source)}))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("ledger", help="export, prune or import into the provenance ledger")
    p.add_argument("--ledger", default=None, help="ledger file (default: $TESSERA_HOME/ledger.sqlite3)")
    actions = p.add_subparsers(dest="action", required=True)
    e = actions.add_parser("export", help="every record, with its signature, as JSON lines")
    e.add_argument("output", help="a .jsonl file to write")
    e.set_defaults(func=cmd_export)
    r = actions.add_parser("prune", help="delete records older than a number of days")
    r.add_argument("--older-than-days", type=float, required=True)
    r.set_defaults(func=cmd_prune)
    i = actions.add_parser(
        "import", help="sign and add the records of the JSON-lines registry earlier releases kept (fingerprints.jsonl)"
    )
    i.add_argument(
        "source", nargs="?", default=None, help="the old registry (default: $TESSERA_HOME/fingerprints.jsonl)"
    )
    i.add_argument("--store-prompt", action="store_true", help="keep the prompts in the records (default: their hash)")
    i.set_defaults(func=cmd_import)
