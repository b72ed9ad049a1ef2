"""The pipeline's output step: mark the frames under the installation key; once the file is in
place, sign its C2PA manifest and record the generation in the ledger.

Every video that leaves `TesseraPipeline` goes through a `Watermarker` (mark) and a `Ledger`
(record); the CLI, the Python API and the server share this path. The pieces live in
`provenance.py` (keyed mark, C2PA) and `ledger.py` (signed SQLite records).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tessera.safety import ledger
from tessera.safety.keys import InstallationKey, load_key
from tessera.safety.ledger import ProvenanceRecord
from tessera.safety.provenance import Watermarker, sign_mp4

__all__ = ["Ledger", "Watermarker"]


class Ledger(ledger.Ledger):
    """The installation's ledger ($TESSERA_HOME/ledger.sqlite3 by default) with the pipeline's `record` step.

    `store_prompt` keeps prompts in the records (default: only their SHA-256).
    """

    def __init__(self, path: str | Path | None = None, key: InstallationKey | None = None, store_prompt: bool = False):
        self.key = key or load_key()
        self.store_prompt = store_prompt
        super().__init__(path, self.key)

    def record(
        self,
        frames: np.ndarray,
        *,
        generation_id: str,
        model_id: str,
        prompt: str,
        seed: int,
        path: str | Path | None = None,
        model_hash: str = "unknown",
        kind: str = "generate",
        parent_id: str | None = None,
        filter_decision: str = "not checked",
        **settings,
    ) -> ProvenanceRecord:
        """Record the marked frames (T, H, W, 3); call only once the video is in place.

        With `path` (the MP4 just written), its C2PA manifest is signed first, so a record never
        points at a file without one. `settings` (steps, guidance, fps, ...) are kept as given.
        """
        t, h, w, _ = frames.shape
        record = ProvenanceRecord.create(
            frames,
            prompt=prompt,
            key=self.key,
            store_prompt=self.store_prompt,
            generation_id=generation_id,
            kind=kind,
            model_id=model_id,
            model_hash=model_hash,
            seed=int(seed),
            settings={"width_px": w, "height_px": h, "frames": t, **settings},
            filter_decision=filter_decision,
            parent_id=parent_id,
        )
        if path is not None:
            sign_mp4(path, record)
        self.append(record)
        return record
