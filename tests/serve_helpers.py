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
        r"home/fingerprints\.jsonl",
        r"client/.*",
    )
    found = [str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()]
    return [f for f in found if not any(re.fullmatch(a, f) for a in allowed)]
