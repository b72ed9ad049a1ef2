"""Settings of `tessera serve`: one dataclass, every limit with its unit in the name."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_data_dir() -> Path:
    """$TESSERA_HOME/serve, TESSERA_HOME defaulting to ~/.tessera."""
    return Path(os.environ.get("TESSERA_HOME", "~/.tessera")).expanduser() / "serve"


@dataclass
class ServeConfig:
    """Where the server keeps its state and how much it accepts.

    Everything the server writes lives under `data_dir`: `jobs.sqlite3` (jobs and keys),
    `videos/` (results, named by job id), `uploads/` (checked uploads, server-chosen names).
    """

    data_dir: Path = field(default_factory=default_data_dir)
    checkpoint: str | None = None  # generation checkpoint; None: the bundled model
    student: str | None = None  # few-step student for fast jobs; None: the bundled one, with the bundled model
    workers: int = 1  # worker processes; with GPUs, one per GPU unless set
    device: str | None = None  # None: a GPU if there is one, else the CPU
    max_queue: int = 64  # queued jobs over all keys; beyond it POST answers 429
    retention_s: float = 7 * 24 * 3600.0  # results stay downloadable this long
    rate_per_min: int = 60  # default per-key limit on POST requests per minute
    quota_per_day: int = 500  # default per-key limit on jobs created per 24 h
    max_request_bytes: int = 64 * 1024  # JSON bodies
    max_upload_bytes: int = 64 * 1024 * 1024
    max_upload_side_px: int = 2048
    max_upload_frames: int = 600
    lease_s: float = 20.0  # a running job whose worker has not reported for this long is queued again
    poll_s: float = 0.2  # how often an idle worker looks for work
    worker_nice: int = 10  # CPU priority of workers below the HTTP process (0: same), so requests are answered
    # at once while generations run; on a GPU the worker mostly waits, so this costs it little
    cors_origins: tuple[str, ...] = ()  # empty: CORS off

    @property
    def db_path(self) -> Path:
        return Path(self.data_dir) / "jobs.sqlite3"

    @property
    def videos_dir(self) -> Path:
        return Path(self.data_dir) / "videos"

    @property
    def uploads_dir(self) -> Path:
        return Path(self.data_dir) / "uploads"

    def make_dirs(self) -> None:
        for d in (Path(self.data_dir), self.videos_dir, self.uploads_dir):
            d.mkdir(parents=True, exist_ok=True)
