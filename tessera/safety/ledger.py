"""The provenance ledger: one signed record per generation or edit, safe under concurrent writers and crashes.

Storage is SQLite in WAL mode (`$TESSERA_HOME/ledger.sqlite3`): each `append` is one
transaction, so eight processes writing at once each land whole, and a process killed mid-write
(`kill -9`) leaves the last committed state, which readers open as usual.

Each record is stored as canonical JSON with an HMAC-SHA256 signature under the installation
key (`InstallationKey.derive("ledger")`): an edited row reads back with `signature_ok` False.
The prompt itself is not stored unless the user opts in; its SHA-256 is, so a known prompt can
still be checked against a record.

Ways back from a file to its record: the watermark payload (`find_payload`), the generation id in
the C2PA manifest (`get`), and, when both are gone, the perceptual hash (`nearest`), which
refuses clips with too little structure to tell apart (`fingerprint.fallback_refusal`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tessera.errors import InputError
from tessera.safety import fingerprint
from tessera.safety.keys import InstallationKey, tessera_home
from tessera.safety.watermark import make_payload

LEDGER_FILE = "ledger.sqlite3"
BUSY_TIMEOUT_S = 60.0  # a writer waits this long for another's transaction
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    generation_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    body TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_generation ON records (generation_id);
CREATE INDEX IF NOT EXISTS records_by_payload ON records (payload);
"""


def prompt_sha256(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (the model hash of a checkpoint), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ProvenanceRecord:
    """What made one generated or edited clip; `prompt` is None unless the user opted in."""

    generation_id: str
    kind: str  # "generate", or the edit: "extend", "interpolate", "restyle", "inpaint", ...
    model_id: str
    model_hash: str  # SHA-256 of the checkpoint
    prompt_sha256: str
    seed: int
    settings: dict  # steps, guidance, width_px, height_px, frames, fps, ...
    filter_decision: str  # what the prompt filter said: "allowed", or the rule that let it through
    video_hash: str  # fingerprint.video_hash of the frames as written
    payload: str  # hex watermark payload (watermark.make_payload)
    key_id: str  # InstallationKey.key_id of the key that marked and signed it
    created_at: str  # ISO 8601, UTC
    prompt: str | None = None
    parent_id: str | None = None  # the generation an edit started from

    @classmethod
    def create(
        cls, frames: np.ndarray, *, prompt: str, key: InstallationKey, store_prompt: bool = False, **meta
    ) -> ProvenanceRecord:
        """Fill hash, payload, prompt hash, key id and time from marked frames (T, H, W, 3); `meta` gives the rest."""
        return cls(
            prompt_sha256=prompt_sha256(prompt),
            prompt=prompt if store_prompt else None,
            video_hash=fingerprint.video_hash(frames),
            payload=make_payload(meta["model_id"], meta["generation_id"]).hex(),
            key_id=key.key_id,
            created_at=meta.pop("created_at", None) or datetime.now(UTC).isoformat(timespec="seconds"),
            **meta,
        )

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the bytes the signature covers."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> ProvenanceRecord:
        obj = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})  # keys from newer writers are ignored


LEGACY_REGISTRY = "fingerprints.jsonl"  # where releases before the ledger recorded generations
_LEGACY_FIELDS = ("generation_id", "model_id", "prompt", "seed", "created_at", "video_hash")


def record_from_legacy(obj: dict, store_prompt: bool = False) -> ProvenanceRecord:
    """One line of the old JSONL registry as a ledger record (legacy-key mark; no model hash was kept).

    Raises ValueError naming what is missing or malformed.
    """
    missing = [k for k in _LEGACY_FIELDS if k not in obj]
    if missing:
        raise ValueError(f"lacks {', '.join(missing)}")
    if not isinstance(obj["prompt"], str) or not isinstance(obj["video_hash"], str):
        raise ValueError("prompt and video_hash must be strings")
    settings = {k: obj[k] for k in ("steps", "guidance", "width_px", "height_px", "frames", "fps") if k in obj}
    return ProvenanceRecord(
        generation_id=str(obj["generation_id"]),
        kind="generate",
        model_id=str(obj["model_id"]),
        model_hash="unknown (imported from the JSONL registry)",
        prompt_sha256=prompt_sha256(obj["prompt"]),
        seed=int(obj["seed"]),
        settings=settings,
        filter_decision="not checked (made before the prompt filter)",
        video_hash=obj["video_hash"],
        payload=make_payload(str(obj["model_id"]), str(obj["generation_id"])).hex(),
        key_id="legacy",
        created_at=str(obj["created_at"]),
        prompt=obj["prompt"] if store_prompt else None,
    )


@dataclass
class LedgerEntry:
    """A record as read back, with its row number and whether its signature holds under our key."""

    seq: int
    record: ProvenanceRecord
    signature_ok: bool | None  # None when the ledger was opened without a key
    distance: float | None = field(default=None)  # set by `nearest`: the hash distance of the match


class Ledger:
    """The SQLite ledger at `path` (default $TESSERA_HOME/ledger.sqlite3), signed with `key`."""

    def __init__(self, path: str | Path | None = None, key: InstallationKey | None = None):
        self.path = Path(path) if path is not None else tessera_home() / LEDGER_FILE
        self._mac_key = key.derive("ledger") if key is not None else None

    def _connect(self) -> sqlite3.Connection:
        """An open connection; InputError naming the file when it is a folder, not SQLite, or damaged."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise self._unusable(e) from e
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a committed record survives power loss, not just a crash
            db.executescript(SCHEMA)
        except sqlite3.Error as e:
            db.close()
            raise self._unusable(e) from e
        return db

    def _unusable(self, e: Exception) -> InputError:
        return InputError(
            f"the provenance ledger {self.path} cannot be opened ({e}): it is a folder, not a Tessera ledger "
            f"(SQLite), or damaged; pass another --ledger, or move the file aside and a new ledger is started"
        )

    def _sign(self, body: str) -> str:
        if self._mac_key is None:
            raise ValueError("the ledger was opened without a key; pass key=load_key() to write records")
        return hmac.new(self._mac_key, body.encode(), hashlib.sha256).hexdigest()

    def append(self, record: ProvenanceRecord) -> int:
        """Store one record in one transaction; returns its row number."""
        body = record.to_json()
        db = self._connect()
        try:
            cur = db.execute(
                "INSERT INTO records (generation_id, payload, created_at, body, signature) VALUES (?, ?, ?, ?, ?)",
                (record.generation_id, record.payload, record.created_at, body, self._sign(body)),
            )
            return int(cur.lastrowid)
        finally:
            db.close()

    def _entries(self, where: str = "", args: tuple = ()) -> Iterator[LedgerEntry]:
        if not self.path.exists():
            return
        db = self._connect()
        try:
            rows = db.execute(f"SELECT seq, body, signature FROM records {where} ORDER BY seq", args).fetchall()
        finally:
            db.close()
        for seq, body, signature in rows:
            ok = None if self._mac_key is None else hmac.compare_digest(self._sign(body), signature)
            yield LedgerEntry(seq, ProvenanceRecord.from_json(body), ok)

    def entries(self) -> list[LedgerEntry]:
        """Every record, oldest first."""
        return list(self._entries())

    def get(self, generation_id: str) -> LedgerEntry | None:
        """The latest record with this generation id, or None."""
        found = list(self._entries("WHERE generation_id = ?", (generation_id,)))
        return found[-1] if found else None

    def find_payload(self, payload: bytes) -> LedgerEntry | None:
        """The latest record whose watermark payload is `payload`, or None."""
        found = list(self._entries("WHERE payload = ?", (payload.hex(),)))
        return found[-1] if found else None

    def nearest(self, frames: np.ndarray, max_distance: float = fingerprint.MATCH_DISTANCE) -> LedgerEntry | None:
        """The record whose video hash is closest to these frames' (T, H, W, 3), within `max_distance`.

        None when nothing is that close, or when the frames or a record have too little structure
        to be matched by hash (`fingerprint.fallback_refusal`, `fingerprint.structure_bits`).
        """
        if fingerprint.fallback_refusal(frames) is not None:
            return None
        query = fingerprint.video_hash(frames)
        best = None
        for entry in self._entries():
            if fingerprint.structure_bits(entry.record.video_hash) < fingerprint.MIN_STRUCTURE_BITS:
                continue  # a flat record (a black clip) would match every flat query
            d = fingerprint.hash_distance(query, entry.record.video_hash)
            if d <= max_distance and (best is None or d < best.distance):
                best, best.distance = entry, d
        return best

    def import_legacy(self, path: str | Path, store_prompt: bool = False) -> dict:
        """Sign and append the records of an old JSONL registry that are not here yet (by generation id).

        Returns {"imported", "already_present", "skipped": [(line number, why)]}; running it twice imports nothing twice.
        """
        if self._mac_key is None:
            raise ValueError("the ledger was opened without a key; pass key=load_key() to import records")
        have = {e.record.generation_id for e in self._entries()}
        imported, present, skipped = 0, 0, []
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = record_from_legacy(json.loads(line), store_prompt)
                except (ValueError, TypeError, AttributeError) as e:  # a torn last line, a foreign line
                    skipped.append((n, str(e)[:200]))
                    continue
                if record.generation_id in have:
                    present += 1
                    continue
                self.append(record)
                have.add(record.generation_id)
                imported += 1
        return {"imported": imported, "already_present": present, "skipped": skipped}

    def export(self, out: str | Path) -> int:
        """Write every record as JSON lines ({seq, record, signature}) to `out`; returns how many."""
        db = self._connect() if self.path.exists() else None
        rows = db.execute("SELECT seq, body, signature FROM records ORDER BY seq").fetchall() if db else []
        if db:
            db.close()
        with open(out, "w", encoding="utf-8") as f:
            for seq, body, signature in rows:
                f.write(json.dumps({"seq": seq, "record": json.loads(body), "signature": signature}) + "\n")
        return len(rows)

    def prune(self, before: datetime) -> int:
        """Delete the records created before `before` (timezone-aware); returns how many."""
        if not self.path.exists():
            return 0
        cutoff = before.astimezone(UTC).isoformat(timespec="seconds")
        db = self._connect()
        try:
            n = db.execute("DELETE FROM records WHERE created_at < ?", (cutoff,)).rowcount
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
        return int(n)
