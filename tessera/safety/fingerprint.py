"""Generation records and a perceptual video hash, so a file can be traced to the generation that made it.

Two ways back from a file to its `GenerationRecord`:

* the watermark payload (`watermark.extract`) holds a hash of the generation id, matched by
  `FingerprintRegistry.find_payload`;
* when the watermark is gone, `video_hash` — a perceptual hash that survives re-encoding and
  resizing — finds the closest record with `FingerprintRegistry.nearest`.

The registry is an append-only JSONL file, one record per line, written with one `write` per
record. A crash mid-write can leave a truncated last line; readers skip it and the next `add`
starts on a fresh line, so the file stays readable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy.fft import dctn

from tessera.safety.watermark import luma, make_payload

HASH_FRAMES = 4  # frames sampled evenly over the clip
HASH_GRID_PX = 32  # each sampled frame is area-averaged to HASH_GRID_PX × HASH_GRID_PX luma
HASH_DCT = 8  # the HASH_DCT × HASH_DCT lowest DCT frequencies, less DC, give HASH_DCT² - 1 bits per frame
HASH_DEADZONE = 0.05  # a coefficient counts as positive above this fraction of the RMS coefficient
MATCH_DISTANCE = 0.2  # `nearest` ignores records farther than this (re-encodes score < 0.1, other clips ~0.5)


# -- perceptual hash ------------------------------------------------------------------------------


def _area_average(image: np.ndarray, size: int) -> np.ndarray:
    """Mean over a size × size grid of near-equal cells; (H, W) -> (size, size)."""
    h, w = image.shape
    if h < size or w < size:
        raise ValueError(f"frames of {w}×{h} are smaller than the {size}×{size} hash grid")
    row_edges = np.linspace(0, h, size + 1).astype(int)  # (size + 1,)
    col_edges = np.linspace(0, w, size + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(image, row_edges[:-1], axis=0), col_edges[:-1], axis=1)  # (size, size)
    return sums / np.outer(np.diff(row_edges), np.diff(col_edges))


def _frame_bits(y: np.ndarray) -> np.ndarray:
    """One frame's luma (H, W) -> (HASH_DCT² - 1,) bits: which low DCT frequencies are clearly positive.

    "Clearly" means above HASH_DEADZONE × their RMS: symmetric content has many coefficients near
    zero, and comparing those with zero (or a median) would flip bits under compression noise.
    """
    coeffs = dctn(_area_average(y, HASH_GRID_PX), norm="ortho")[:HASH_DCT, :HASH_DCT].ravel()[1:]  # drop DC
    return (coeffs > HASH_DEADZONE * np.sqrt(np.mean(coeffs**2))).astype(np.uint8)


def video_hash(frames: np.ndarray) -> str:
    """Perceptual hash of uint8 frames (T, H, W, 3) as hex: HASH_FRAMES × 63 bits.

    Frames are sampled at the same fractions of the clip's length, so a re-encode (or a change of
    size) hashes the same moments; each is reduced to coarse luma, so compression noise and
    resampling barely move it.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be (T, H, W, 3) with T ≥ 1, got {frames.shape}")
    t = len(frames)
    picks = np.round((np.arange(HASH_FRAMES) + 0.5) / HASH_FRAMES * t - 0.5).astype(int).clip(0, t - 1)
    bits = np.concatenate([_frame_bits(luma(frames[i : i + 1])[0]) for i in picks])  # (HASH_FRAMES · 63,)
    return np.packbits(bits).tobytes().hex()


def hash_distance(a: str, b: str) -> float:
    """Fraction of differing bits between two `video_hash` values, in [0, 1]."""
    if len(a) != len(b):
        raise ValueError(f"hashes differ in length ({len(a)} vs {len(b)} hex digits); both must come from video_hash")
    n_bits = HASH_FRAMES * (HASH_DCT**2 - 1)
    x = np.unpackbits(np.frombuffer(bytes.fromhex(a), np.uint8))[:n_bits]
    y = np.unpackbits(np.frombuffer(bytes.fromhex(b), np.uint8))[:n_bits]
    return float(np.mean(x != y))


# -- records --------------------------------------------------------------------------------------


@dataclass
class GenerationRecord:
    """What made one generated clip."""

    generation_id: str
    model_id: str
    prompt: str
    seed: int
    steps: int
    guidance: float
    width_px: int
    height_px: int
    frames: int
    fps: float
    created_at: str  # ISO 8601, UTC
    video_hash: str  # hex, from video_hash()
    enhanced_prompt: str = ""  # what the text encoder read after the prompt enhancer ("" in older records)

    @classmethod
    def from_frames(cls, frames: np.ndarray, *, created_at: str | None = None, **meta) -> GenerationRecord:
        """Fill size, frame count, hash and time from the frames (T, H, W, 3); `meta` gives the rest."""
        t, h, w, _ = frames.shape
        created_at = created_at or datetime.now(UTC).isoformat(timespec="seconds")
        return cls(width_px=w, height_px=h, frames=t, created_at=created_at, video_hash=video_hash(frames), **meta)

    @property
    def payload(self) -> bytes:
        """The watermark payload this generation's frames carry."""
        return make_payload(self.model_id, self.generation_id)

    @classmethod
    def from_json(cls, obj: dict) -> GenerationRecord:
        """Build from a parsed JSON object; unknown keys (from newer writers) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = required - obj.keys()
        if missing:
            raise ValueError(f"record lacks {sorted(missing)}")
        return cls(**{k: obj[k] for k in names if k in obj})


# -- registry -------------------------------------------------------------------------------------


def default_registry_path() -> Path:
    """$TESSERA_HOME/fingerprints.jsonl, TESSERA_HOME defaulting to ~/.tessera."""
    return Path(os.environ.get("TESSERA_HOME", "~/.tessera")).expanduser() / "fingerprints.jsonl"


class FingerprintRegistry:
    """Append-only JSONL store of `GenerationRecord`s."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_registry_path()

    def add(self, record: GenerationRecord) -> None:
        """Append one record as one line, with a single write, and sync it to disk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(dataclasses.asdict(record), ensure_ascii=False, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line  # an earlier write was cut short: start on a fresh line
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> Iterator[GenerationRecord]:
        """Every readable record, oldest first.

        Lines cut short by a crash mid-write are not valid JSON and are skipped; valid JSON that is
        not a record is skipped with a warning.
        """
        if not self.path.exists():
            return
        for i, raw in enumerate(self.path.read_bytes().split(b"\n")):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError:  # truncated line (JSONDecodeError, UnicodeDecodeError)
                continue
            try:
                record = GenerationRecord.from_json(obj)
            except (ValueError, TypeError, AttributeError) as e:
                warnings.warn(f"{self.path}:{i + 1} is not a generation record ({e}); skipped", stacklevel=2)
                continue
            yield record

    def _latest(self, match) -> GenerationRecord | None:
        """The last record for which `match(record)` is true, or None."""
        found = None
        for record in self.records():
            if match(record):
                found = record
        return found

    def get(self, generation_id: str) -> GenerationRecord | None:
        """The latest record with this generation id, or None."""
        return self._latest(lambda r: r.generation_id == generation_id)

    def find_payload(self, payload: bytes) -> GenerationRecord | None:
        """The latest record whose watermark payload is `payload` (from `watermark.extract`), or None."""
        return self._latest(lambda r: r.payload == payload)

    def nearest(
        self, frames: np.ndarray, max_distance: float = MATCH_DISTANCE
    ) -> tuple[GenerationRecord, float] | None:
        """The record whose video hash is closest to these frames' (T, H, W, 3), and the distance.

        None when the registry is empty or nothing is within `max_distance`.
        """
        query = video_hash(frames)
        best: tuple[GenerationRecord, float] | None = None
        for record in self.records():
            d = hash_distance(query, record.video_hash)
            if d <= max_distance and (best is None or d < best[1]):
                best = (record, d)
        return best
