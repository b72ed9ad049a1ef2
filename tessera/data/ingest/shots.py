"""Split: a probed source -> shots (PySceneDetect) -> clips within [min, max] seconds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tessera.data.ingest.probe import reject, short_error
from tessera.data.ingest.remote import local_path


@dataclass
class ShotConfig:
    threshold: float = 27.0  # PySceneDetect ContentDetector threshold (HSV change between frames)
    min_shot_s: float = 0.5  # shorter shots are merged by the detector
    min_duration_s: float = 2.0  # shorter clips are rejected as too short
    max_duration_s: float = 8.0  # longer shots are cut into equal clips of at most this length


def detect_shots(path: str | Path, duration_s: float, fps: float, cfg: ShotConfig) -> list[tuple[float, float]]:
    """Shot boundaries (start_s, end_s) found by PySceneDetect's ContentDetector; one shot if no cut."""
    import logging

    from scenedetect import ContentDetector, detect

    logging.getLogger("pyscenedetect").setLevel(logging.WARNING)
    min_len = max(1, round(cfg.min_shot_s * fps))
    scenes = detect(
        str(local_path(path)), ContentDetector(threshold=cfg.threshold, min_scene_len=min_len), backend="pyav"
    )
    shots = [(float(a.seconds), float(b.seconds)) for a, b in scenes]
    return shots or [(0.0, duration_s)]


def clip_id(source: str | Path, shot: int, start_s: float, end_s: float) -> str:
    """Stable key of a clip: source path, shot index and time range; sorts by source, then time."""
    return f"{source}#{shot:04d}@{start_s:09.3f}-{end_s:09.3f}"


def shots_to_clips(source: str, shots: list[tuple[float, float]], cfg: ShotConfig) -> list[dict]:
    """Cut shots into clips within [min, max] seconds; a shot shorter than the minimum becomes a rejected clip."""
    clips = []
    for k, (a, b) in enumerate(shots):
        d = b - a
        if d < cfg.min_duration_s:
            clips.append(
                {
                    "id": clip_id(source, k, a, b),
                    "shot": k,
                    "start_s": round(a, 3),
                    "end_s": round(b, 3),
                    "reasons": ["too_short"],
                    "filters": {"too_short": {"value": round(d, 3), "threshold": cfg.min_duration_s, "pass": False}},
                }
            )
            continue
        n = max(1, math.ceil(d / cfg.max_duration_s - 1e-9))
        for j in range(n):
            s, e = a + d * j / n, a + d * (j + 1) / n
            clips.append(
                {
                    "id": clip_id(source, k, s, e),
                    "shot": k,
                    "start_s": round(s, 3),
                    "end_s": round(e, 3),
                    "reasons": [],
                    "filters": {"too_short": {"value": round(e - s, 3), "threshold": cfg.min_duration_s, "pass": True}},
                }
            )
    return clips


def split_source(source: str, probe: dict, cfg: ShotConfig) -> dict:
    """Stage function: the clips of one probed source, or a reason when shot detection fails."""
    try:
        shots = detect_shots(source, probe["duration_s"], probe["fps"], cfg)
    except Exception as e:  # noqa: BLE001 - any decoder failure rejects this file, the run goes on
        return reject("undecodable", f"shot detection failed ({type(e).__name__}: {short_error(e)})")
    return {"clips": shots_to_clips(source, shots, cfg)}
