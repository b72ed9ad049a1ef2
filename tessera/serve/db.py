"""Jobs and API keys in one embedded SQLite database (WAL mode), shared by the HTTP process and the workers.

A job moves queued -> running -> done | failed | cancelled. A worker *claims* a queued job
with a lease (`lease_owner`, `lease_until`) in one transaction and renews the lease with
every progress report. A worker that dies stops renewing; `requeue_expired` puts its job
back in the queue, so a job accepted once is finished even after `kill -9` of a worker or
of the server. Only the lease holder can finish a job (`finish` checks the owner in the same
UPDATE), so a job completes exactly once even if a stalled worker wakes up late.

Times are UNIX seconds (float). Every statement runs on a per-thread connection with a
busy timeout, so the HTTP threads and the worker processes never see "database is locked".
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

MAX_ATTEMPTS = 3  # a job whose worker died this many times is failed, not retried forever
TERMINAL = ("done", "failed", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created REAL NOT NULL,
    revoked REAL, rate_per_min INTEGER, quota_per_day INTEGER
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, key_id TEXT NOT NULL, kind TEXT NOT NULL, params TEXT NOT NULL,
    state TEXT NOT NULL, step INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0,
    error TEXT, created REAL NOT NULL, started REAL, finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_until REAL,
    cancel INTEGER NOT NULL DEFAULT 0, video TEXT, generation_id TEXT,
    completions INTEGER NOT NULL DEFAULT 0, expired INTEGER NOT NULL DEFAULT 0, uploads TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created);
CREATE INDEX IF NOT EXISTS jobs_key ON jobs (key_id, created);
"""
# Columns added since the first release, with their types: a database made before them gains them when opened.
ADDED_COLUMNS = {"jobs": {"uploads": "TEXT"}}  # uploads: JSON list of an edit job's input file names


class QueueFull(Exception):
    """The bounded queue holds `max_queue` jobs already."""


def _row(cur: sqlite3.Cursor, row: tuple) -> dict:
    return {d[0]: v for d, v in zip(cur.description, row)}


class JobStore:
    """The database at `path`; safe to use from many threads and processes at once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns a database made by an earlier release lacks (in one write transaction, so
        several processes opening it at once add each column once)."""
        with self._tx() as c:
            for table, columns in ADDED_COLUMNS.items():
                have = {r["name"] for r in c.execute(f"PRAGMA table_info({table})").fetchall()}
                for name, kind in columns.items():
                    if name not in have:
                        c.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = _row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across process crashes
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def _tx(self):
        return _Transaction(self._conn())

    def _one(self, sql: str, args: tuple = ()) -> dict | None:
        return self._conn().execute(sql, args).fetchone()

    def _all(self, sql: str, args: tuple = ()) -> list[dict]:
        return self._conn().execute(sql, args).fetchall()

    # -- keys ------------------------------------------------------------------------------------
    def add_key(self, name: str, key_hash: str, rate_per_min: int | None, quota_per_day: int | None) -> str:
        key_id = uuid.uuid4().hex[:12]
        self._conn().execute(
            "INSERT INTO keys (id, name, hash, created, rate_per_min, quota_per_day) VALUES (?, ?, ?, ?, ?, ?)",
            (key_id, name, key_hash, time.time(), rate_per_min, quota_per_day),
        )
        return key_id

    def key_by_hash(self, key_hash: str) -> dict | None:
        return self._one("SELECT * FROM keys WHERE hash = ? AND revoked IS NULL", (key_hash,))

    def list_keys(self) -> list[dict]:
        return self._all("SELECT id, name, created, revoked, rate_per_min, quota_per_day FROM keys ORDER BY created")

    def revoke_key(self, key_id: str) -> bool:
        cur = self._conn().execute(
            "UPDATE keys SET revoked = ? WHERE id = ? AND revoked IS NULL", (time.time(), key_id)
        )
        return cur.rowcount == 1

    # -- submitting and reading jobs -------------------------------------------------------------
    def create_job(
        self, key_id: str, kind: str, params: dict, max_queue: int, uploads: list[str] | None = None
    ) -> dict:
        """Queue a job; raises QueueFull when `max_queue` jobs are waiting already.

        uploads: names of the files (in the server's uploads folder) the job reads; kept until `expire_uploads`.
        """
        job_id = uuid.uuid4().hex
        with self._tx() as c:
            waiting = c.execute("SELECT COUNT(*) AS n FROM jobs WHERE state = 'queued'").fetchone()["n"]
            if waiting >= max_queue:
                raise QueueFull(f"{waiting} jobs are queued (limit {max_queue})")
            c.execute(
                "INSERT INTO jobs (id, key_id, kind, params, state, created, uploads) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                (job_id, key_id, kind, json.dumps(params), time.time(), json.dumps(uploads) if uploads else None),
            )
        return self.get_job(job_id)

    def get_job(self, job_id: str, key_id: str | None = None) -> dict | None:
        """The job, or None; with `key_id`, only when that key owns it."""
        if key_id is None:
            return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._one("SELECT * FROM jobs WHERE id = ? AND key_id = ?", (job_id, key_id))

    def list_jobs(self, key_id: str, limit: int = 50) -> list[dict]:
        return self._all("SELECT * FROM jobs WHERE key_id = ? ORDER BY created DESC LIMIT ?", (key_id, limit))

    def jobs_since(self, key_id: str, since: float) -> int:
        row = self._one("SELECT COUNT(*) AS n FROM jobs WHERE key_id = ? AND created >= ?", (key_id, since))
        return row["n"]

    def queue_position(self, job: dict) -> int:
        """How many queued jobs are ahead of this one."""
        row = self._one("SELECT COUNT(*) AS n FROM jobs WHERE state = 'queued' AND created < ?", (job["created"],))
        return row["n"]

    def cancel(self, job_id: str, key_id: str) -> dict | None:
        """Cancel a queued job at once; ask a running one's worker to stop. None when not this key's job."""
        with self._tx() as c:
            c.execute(
                "UPDATE jobs SET state = 'cancelled', finished = ? WHERE id = ? AND key_id = ? AND state = 'queued'",
                (time.time(), job_id, key_id),
            )
            c.execute("UPDATE jobs SET cancel = 1 WHERE id = ? AND key_id = ? AND state = 'running'", (job_id, key_id))
        return self.get_job(job_id, key_id)

    # -- workers ---------------------------------------------------------------------------------
    def claim(self, owner: str, lease_s: float) -> dict | None:
        """Take the oldest queued job for `owner`, leased for `lease_s` seconds; None when the queue is empty."""
        if self._one("SELECT 1 FROM jobs WHERE state = 'queued' LIMIT 1") is None:
            return None  # an idle worker polls with reads only, taking no write lock
        now = time.time()
        with self._tx() as c:
            job = c.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created LIMIT 1").fetchone()
            if job is None:
                return None
            c.execute(
                "UPDATE jobs SET state = 'running', lease_owner = ?, lease_until = ?, started = ?, step = 0,"
                " attempts = attempts + 1 WHERE id = ?",
                (owner, now + lease_s, now, job["id"]),
            )
        return self.get_job(job["id"])

    def report(self, job_id: str, owner: str, step: int, total: int, lease_s: float) -> bool:
        """Record progress and renew the lease; False when the job was cancelled or the lease lost."""
        cur = self._conn().execute(
            "UPDATE jobs SET step = ?, total = ?, lease_until = ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
            (step, total, time.time() + lease_s, job_id, owner),
        )
        if cur.rowcount != 1:
            return False
        return not self._one("SELECT cancel FROM jobs WHERE id = ?", (job_id,))["cancel"]

    def finish(self, job_id: str, owner: str, video: str, generation_id: str) -> bool:
        """Mark done; only the lease holder can, so a job completes exactly once."""
        cur = self._conn().execute(
            "UPDATE jobs SET state = 'done', finished = ?, video = ?, generation_id = ?, step = total,"
            " completions = completions + 1, lease_owner = NULL WHERE id = ? AND lease_owner = ? AND state = 'running'",
            (time.time(), video, generation_id, job_id, owner),
        )
        return cur.rowcount == 1

    def end(self, job_id: str, owner: str, state: str, error: str | None = None) -> bool:
        """Mark failed or cancelled (by the lease holder)."""
        cur = self._conn().execute(
            "UPDATE jobs SET state = ?, error = ?, finished = ?, lease_owner = NULL"
            " WHERE id = ? AND lease_owner = ? AND state = 'running'",
            (state, error, time.time(), job_id, owner),
        )
        return cur.rowcount == 1

    def requeue_expired(self, now: float | None = None, owners_gone: str | None = None) -> int:
        """Queue again running jobs whose lease ran out (or, with `owners_gone`, whose owner starts with
        that prefix); jobs that have used MAX_ATTEMPTS fail instead. Returns how many were touched."""
        now = time.time() if now is None else now
        gone = owners_gone is not None
        where = "state = 'running' AND (lease_until < ?" + (" OR lease_owner LIKE ?)" if gone else ")")
        args = (now, owners_gone + "%") if gone else (now,)
        with self._tx() as c:
            cancelled = c.execute(
                f"UPDATE jobs SET state = 'cancelled', finished = ?, lease_owner = NULL WHERE {where} AND cancel = 1",
                (now, *args),
            ).rowcount
            failed = c.execute(
                f"UPDATE jobs SET state = 'failed', finished = ?, lease_owner = NULL,"
                f" error = 'the worker stopped {MAX_ATTEMPTS} times on this job' WHERE {where} AND attempts >= ?",
                (now, *args, MAX_ATTEMPTS),
            ).rowcount
            queued = c.execute(
                f"UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL, step = 0 WHERE {where}",
                args,
            ).rowcount
        return cancelled + failed + queued

    def expire_results(self, before: float) -> list[str]:
        """Mark results finished before `before` as expired; returns their video paths to delete."""
        with self._tx() as c:
            rows = c.execute(
                "SELECT id, video FROM jobs WHERE state = 'done' AND expired = 0 AND finished < ?", (before,)
            ).fetchall()
            c.executemany("UPDATE jobs SET expired = 1 WHERE id = ?", [(r["id"],) for r in rows])
        return [r["video"] for r in rows if r["video"]]

    def expire_uploads(self, before: float) -> list[str]:
        """Forget the uploads of jobs that ended (done, failed or cancelled) before `before`; returns their
        file names to delete. A job that may still run keeps its uploads."""
        with self._tx() as c:
            rows = c.execute(
                "SELECT id, uploads FROM jobs WHERE uploads IS NOT NULL AND state IN (?, ?, ?) AND finished < ?",
                (*TERMINAL, before),
            ).fetchall()
            c.executemany("UPDATE jobs SET uploads = NULL WHERE id = ?", [(r["id"],) for r in rows])
        return [name for r in rows for name in json.loads(r["uploads"])]

    def upload_names(self) -> set[str]:
        """Every upload a job still holds (the uploads folder's other files belong to no job)."""
        rows = self._all("SELECT uploads FROM jobs WHERE uploads IS NOT NULL")
        return {name for r in rows for name in json.loads(r["uploads"])}

    # -- metrics ---------------------------------------------------------------------------------
    def state_counts(self) -> dict[str, int]:
        rows = self._all("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {r["state"]: r["n"] for r in rows}

    def latencies(self, limit: int = 10000) -> list[float]:
        """Seconds from submission to result of the latest `limit` finished jobs."""
        rows = self._all(
            "SELECT finished - created AS s FROM jobs WHERE state = 'done' ORDER BY finished DESC LIMIT ?", (limit,)
        )
        return [r["s"] for r in rows]


class _Transaction:
    """`with` block holding a write lock from the start (BEGIN IMMEDIATE), committed at the end."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
