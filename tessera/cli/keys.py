"""`tessera keys add | list | revoke`: API keys of `tessera serve`, stored hashed in its database."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tessera.cli.common import UsageError

MAX_NAME = 100  # characters in a key's name


def _store(args: argparse.Namespace):
    from tessera.serve.db import JobStore
    from tessera.serve.settings import ServeConfig, default_data_dir

    cfg = ServeConfig(data_dir=Path(args.data) if args.data else default_data_dir())
    cfg.make_dirs()
    return JobStore(cfg.db_path)


def cmd_keys(args: argparse.Namespace) -> int:
    from tessera.serve.keys import create_key

    store = _store(args)
    if args.action == "add":
        name = args.name.strip()
        if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
            raise UsageError(
                f"key name {args.name[:40]!r}{'…' if len(args.name) > 40 else ''} must be 1 to {MAX_NAME} printable "
                "characters, e.g. the person or service it is for"
            )
        for flag, v in (("--rate-per-min", args.rate_per_min), ("--quota-per-day", args.quota_per_day)):
            if v is not None and v < 1:
                raise UsageError(f"{flag} {v} must be 1 or more")
        key_id, secret = create_key(store, name, args.rate_per_min, args.quota_per_day)
        print(json.dumps({"id": key_id, "name": name, "key": secret}))
        print("the key is shown once; it is stored only as a hash", file=sys.stderr)
    elif args.action == "list":
        print(json.dumps({"keys": store.list_keys()}))
    elif not store.revoke_key(args.id):
        raise UsageError(f"no active key with id {args.id!r}; `tessera keys list` shows the ids")
    else:
        print(json.dumps({"revoked": args.id}))
    return 0


def add_parser(sub) -> None:
    k = sub.add_parser("keys", help="API keys for tessera serve: add, list, revoke")
    k.add_argument("--data", default=None, help="the server's data folder (default: $TESSERA_HOME/serve)")
    actions = k.add_subparsers(dest="action", required=True)
    a = actions.add_parser("add", help="create a key; prints it once")
    a.add_argument("name")
    a.add_argument("--rate-per-min", type=int, default=None, help="POST requests per minute (default: the server's)")
    a.add_argument("--quota-per-day", type=int, default=None, help="jobs per 24 h (default: the server's)")
    actions.add_parser("list", help="ids, names, limits, revocations (never the keys)")
    r = actions.add_parser("revoke", help="disable a key at once")
    r.add_argument("id")
    for p in (k, a, r, *actions.choices.values()):
        p.set_defaults(func=cmd_keys)
