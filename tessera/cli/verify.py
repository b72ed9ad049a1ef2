"""`tessera verify`: mark, C2PA manifest and ledger record of a video or image, and a verdict.

Exit codes: 0 the file is traced to a generation (by its mark, or by the ledger through the
manifest or the fingerprint fallback), 1 nothing traced, 2 bad input, 4 internal error.
"""

from __future__ import annotations

import argparse
import json
import logging

from tessera.cli.common import UsageError
from tessera.errors import EXIT_NOT_FOUND, EXIT_OK, TesseraError

log = logging.getLogger(__name__)


def _human(path: str, report) -> str:
    mark, manifest, ledger = report.mark, report.manifest, report.ledger
    if mark["present"]:
        flip = ", horizontally flipped" if mark["mirrored"] else ""
        mark_line = (
            f"present ({mark['origin']}), payload {mark['payload'] or 'unreadable'}, sync z {mark['sync_z']}{flip}"
        )
    else:
        mark_line = f"not found (sync z {mark['sync_z']})"
    if manifest["present"]:
        ok = "valid signature" if manifest["signature_valid"] else f"INVALID ({', '.join(manifest['failures'])})"
        manifest_line = f"present, {ok}, signer {manifest['signer']}"
    else:
        manifest_line = "not present"
    if ledger["found"]:
        extra = f", distance {ledger['distance']} (fallback)" if ledger.get("fallback") else ""
        ledger_line = (
            f"generation {ledger['generation_id']} by {ledger['by']}{extra}, signature ok: {ledger['signature_ok']}"
        )
    else:
        ledger_line = "no record" + (
            f" (fallback refused: {ledger['fallback_refused']})" if ledger.get("fallback_refused") else ""
        )
    lines = [path, f"  mark:     {mark_line}", f"  manifest: {manifest_line}", f"  ledger:   {ledger_line}"]
    return "\n".join(lines + [f"  verdict:  {report.verdict}"])


def cmd_verify(args: argparse.Namespace) -> int:
    from tessera.export import read_video
    from tessera.safety.keys import load_key
    from tessera.safety.ledger import Ledger
    from tessera.safety.provenance import verify_file

    try:
        frames, _ = read_video(args.video)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from e
    try:
        key = load_key(args.key_file, create=False)
    except FileNotFoundError:
        key = None  # no key on this machine: legacy marks still read, keyed ones show as foreign
    try:
        report = verify_file(args.video, frames, key, Ledger(args.ledger, key=key))
    except TesseraError:
        raise
    except Exception as e:  # a bug, not the user's input: one line, exit 4, traceback in the log
        log.debug("verify failed", exc_info=True)
        raise TesseraError(f"verify failed on {args.video} ({type(e).__name__}: {e}); please report this") from e
    print(json.dumps({"video": str(args.video), **report.to_json()}) if args.json else _human(args.video, report))
    return EXIT_OK if report.traced else EXIT_NOT_FOUND


def add_parser(sub) -> None:
    v = sub.add_parser("verify", help="read a video's watermark, C2PA manifest and ledger record")
    v.add_argument("video", help="a video or image file")
    v.add_argument("--json", action="store_true", help="one JSON object on stdout, for machines")
    v.add_argument("--key-file", default=None, help="installation key file (default: $TESSERA_KEY or $TESSERA_HOME)")
    v.add_argument("--ledger", default=None, help="ledger file (default: $TESSERA_HOME/ledger.sqlite3)")
    v.set_defaults(func=cmd_verify)
