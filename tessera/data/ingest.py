"""Ingest: find source videos, probe them, split them into shots and shots into clips.

Each function takes plain values and returns plain dicts, so the same functions run in a
local process pool or as remote tasks on a cluster. Nothing here raises on a bad video:
a file that cannot be used comes back with a `reason`.
"""

from __future__ import annotations

import glob
import math
import re
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")


class SourceError(ValueError):
    """The SRC argument names no videos."""


# ----------------------------------------------------------------------------- sources


def list_sources(src: str | Path) -> list[Path]:
    """Video paths named by `src`: a folder (searched recursively), a glob, a list file or one video.

    A list file holds one path per line (relative paths are relative to the list file;
    blank lines and lines starting with `#` are skipped). Paths come back absolute and sorted.
    """
    src_s = str(src)
    p = Path(src_s).expanduser()
    if p.is_dir():
        paths = [q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS]
    elif p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
        paths = [p]
    elif p.is_file():
        paths = []
        for line in p.read_text(errors="replace").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                q = Path(line).expanduser()
                paths.append(q if q.is_absolute() else p.parent / q)
    elif glob.has_magic(src_s):
        paths = [Path(q) for q in glob.glob(src_s, recursive=True) if Path(q).is_file()]
    else:
        raise SourceError(f"source {src_s} is not a folder, a glob, a list file or a video; check the path")
    out = sorted({q.resolve() for q in paths})
    if not out:
        raise SourceError(
            f"source {src_s} names no video files (looked for {', '.join(VIDEO_EXTENSIONS)}); check the path or pattern"
        )
    return out


def title_of(path: str | Path) -> str:
    """The title a person gave a video: a sidecar `NAME.txt`, else the container title, else file-name words."""
    path = Path(path)
    side = path.with_suffix(".txt")
    if side.is_file():
        text = " ".join(side.read_text(errors="replace").split())
        if text:
            return text
    try:
        with av.open(str(path)) as c:
            title = str(c.metadata.get("title", "")).strip()
        if title:
            return title
    except (av.error.FFmpegError, OSError):
        pass
    return name_words(path.stem)


def name_words(stem: str) -> str:
    """File-name words: `0003_red-circle_leftTake2` -> `red circle left take`; numbers and camera junk dropped."""
    s = re.sub(r"([a-z])([A-Z])", r"\1 \2", stem)
    words = [w.lower() for w in re.split(r"[\W_]+", s) if w]
    junk = {"img", "vid", "mov", "dsc", "gopr", "mvi", "pxl", "final", "copy", "edit", "take", "clip", "video"}
    return " ".join(w for w in words if not w.isdigit() and w not in junk and not re.fullmatch(r"\d+\w{0,2}", w))


# ----------------------------------------------------------------------------- probe


def probe_video(path: str | Path) -> dict:
    """Duration, frame rate, size, codec and bit rate of a video, or {"reason", "detail"} when it cannot be used.

    Besides reading the header, the first frame and a frame near the end are decoded, so a
    file cut short by a failed download is found here and not in a later stage.
    """
    path = Path(path)
    try:
        size_bytes = path.stat().st_size
    except OSError as e:
        return _reject("unreadable", f"cannot read the file: {e.strerror or e}")
    if size_bytes == 0:
        return _reject("empty_file", "the file has 0 bytes")
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                kind = "audio-only" if c.streams.audio else "no streams"
                return _reject("no_video_stream", f"no video stream ({kind})")
            s = c.streams.video[0]
            fps = float(s.average_rate or s.guessed_rate or 0)
            w, h = s.codec_context.width, s.codec_context.height
            if s.duration is not None and s.time_base is not None:
                duration = float(s.duration * s.time_base)
            elif c.duration is not None:
                duration = c.duration / av.time_base
            else:
                duration = 0.0
            info = {
                "duration_s": round(duration, 4),
                "fps": round(fps, 4),
                "width_px": int(w),
                "height_px": int(h),
                "codec": s.codec_context.name,
                "bitrate_bps": int(s.bit_rate or c.bit_rate or size_bytes * 8 / max(duration, 1e-6)),
                "size_bytes": size_bytes,
            }
    except (av.error.FFmpegError, OSError, ValueError) as e:
        return _reject("not_a_video", f"not a readable video ({type(e).__name__}: {_short(e)})")
    if not fps > 0:
        return _reject("bad_stream", "no frame rate in the video stream")
    if not duration > 0:
        return _reject("zero_length", "the video stream has zero duration")
    if w < 16 or h < 16:
        return _reject("bad_stream", f"frame size {w}x{h} px is below 16 px")
    # decode the first frame and one near the end: catches truncated downloads
    try:
        first = read_frames(path, [0.0])
        last = read_frames(path, [max(0.0, duration - 1.5 / fps)])
    except (av.error.FFmpegError, OSError, ValueError) as e:
        return _reject("undecodable", f"frames do not decode ({type(e).__name__}: {_short(e)})")
    if len(first) == 0:
        return _reject("undecodable", "no frame decodes")
    if len(last) == 0:
        return _reject("truncated", f"no frame decodes near the stated end ({duration:.2f} s)")
    bpp = info["bitrate_bps"] / (w * h * fps)
    info["bits_per_pixel"] = round(bpp, 5)
    return info


def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:160]


def _reject(reason: str, detail: str) -> dict:
    """A stage result that rejects the item: a short reason code for the summary, a sentence for people."""
    return {"reason": reason, "detail": detail}


# ----------------------------------------------------------------------------- frames


def read_frames(path: str | Path, times_s: list[float] | np.ndarray, fmt: str = "rgb24") -> np.ndarray:
    """Decode the frames nearest to ascending times `times_s` (seconds); uint8 (T, H, W, 3) RGB.

    `fmt="gray"` gives the decoder's own luma plane (T, H, W) instead: full resolution and
    untouched by chroma up-sampling, which is what sharpness and block measures need.

    Decoding starts at the key frame before the first time, so reading a short clip from a
    long video does not decode the whole file. Times past the end of the video are dropped.
    """
    times = [float(t) for t in times_s]
    if not times:
        raise ValueError("no frame times given")
    out: list[np.ndarray] = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        rate = float(s.average_rate or s.guessed_rate or 25)
        half = 0.5 / rate
        if times[0] > 1.0 and s.time_base is not None:
            c.seek(int(max(0.0, times[0] - 1.0) / s.time_base), stream=s, backward=True, any_frame=False)
        i = 0
        for frame in c.decode(s):
            ft = float(frame.time) if frame.time is not None else 0.0
            if times[i] >= ft + half:
                continue
            rgb = None
            while i < len(times) and times[i] < ft + half:
                if rgb is None:
                    rgb = frame.to_ndarray(format=fmt)
                out.append(rgb)
                i += 1
            if i == len(times):
                break
    if not out:
        return np.zeros((0, 1, 1, 3) if fmt == "rgb24" else (0, 1, 1), np.uint8)
    return np.stack(out)


def clip_times(start_s: float, end_s: float, fps: float, max_frames: int) -> np.ndarray:
    """Sample times of a clip at `fps`, from its start, at most `max_frames`, all before `end_s`."""
    n = max(1, min(max_frames, math.ceil((end_s - start_s) * fps - 1e-6)))
    return start_s + np.arange(n) / fps


# ----------------------------------------------------------------------------- shots and clips


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
    scenes = detect(str(path), ContentDetector(threshold=cfg.threshold, min_scene_len=min_len), backend="pyav")
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
        return _reject("undecodable", f"shot detection failed ({type(e).__name__}: {_short(e)})")
    return {"clips": shots_to_clips(source, shots, cfg)}
