"""What the server tests share: a server on a temporary data folder, keys, and upload files."""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from tessera.export import write_mp4
from tessera.serve.keys import create_key

SMALL_JOB = {
    "prompt": "a red circle moving left on a black background",
    "width": 128,
    "height": 128,
    "duration_s": 1.0,
    "steps": 2,
}


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def make_keys(store, **limits) -> SimpleNamespace:
    _, alice = create_key(store, "alice", **limits)
    _, bob = create_key(store, "bob", **limits)
    return SimpleNamespace(alice=bearer(alice), bob=bearer(bob))


def mp4_bytes(tmp: Path, frames: int = 9, side: int = 128, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 255, (frames, side, side, 3), dtype=np.uint8)
    (tmp / "client").mkdir(exist_ok=True)
    path = write_mp4(video, tmp / "client" / f"clip{seed}_{frames}_{side}.mp4", fps=8)
    return path.read_bytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height, with a tiny (invalid) image body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def png_bytes(width: int = 128, height: int = 128) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def unexpected_files(tmp: Path) -> list[str]:
    """Files under a server test's `tmp` other than the database, result videos named by job id,
    the fingerprint registry and the client's own files: uploads must leave nothing behind."""
    allowed = (
        r"data/jobs\.sqlite3(-wal|-shm)?",
        r"data/videos/[0-9a-f]{32}\.mp4",
        r"home/.*",  # the installation's key, certificate and ledger
        r"client/.*",
    )
    found = [str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()]
    return [f for f in found if not any(re.fullmatch(a, f) for a in allowed)]


# -- a real `tessera serve` process ------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, checkpoint: str | None, port: int, workers: int, env: dict, log: Path):
    """`tessera serve` as a child process, logging to `log`; returns the Popen once /healthz answers."""
    from tessera.serve.launch import start

    return start(data, port, workers, log, checkpoint=checkpoint, env=env)


def children(pid: int) -> list[int]:
    """Linux: the child processes of `pid` (started by any of its threads)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
