"""The pipeline's output step: hide the watermark in the frames, then record the generation.

Every video that leaves `TesseraPipeline` goes through a `Watermarker` (mark) and, once its
file is in place, a ledger (record); the CLI, the Python API and the server share this path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tessera.safety import fingerprint, watermark


class Watermarker:
    """Invisible mark carrying the model id and the generation id (see `watermark.py`)."""

    def mark(self, frames: np.ndarray, model_id: str, generation_id: str) -> np.ndarray:
        """uint8 frames (T, H, W, 3) -> the same frames carrying the mark."""
        return watermark.embed(frames, watermark.make_payload(model_id, generation_id))


class Ledger:
    """Where generation records go (the fingerprint registry, `$TESSERA_HOME/fingerprints.jsonl` by default)."""

    def __init__(self, path: str | Path | None = None):
        self.registry = fingerprint.FingerprintRegistry(path)

    def record(self, frames: np.ndarray, **meta) -> fingerprint.GenerationRecord:
        """Write the record of the marked frames (T, H, W, 3); call only once the video is in place."""
        record = fingerprint.GenerationRecord.from_frames(frames, **meta)
        self.registry.add(record)
        return record
