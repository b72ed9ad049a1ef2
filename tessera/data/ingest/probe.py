"""Probe: what a source video is (duration, fps, size, codec, bit rate), and frames decoded from it.

Nothing here raises on a bad video: a file that cannot be used comes back as a rejection,
`{"reason": short code, "detail": a sentence for people}`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import av
import numpy as np

from tessera.data.ingest.remote import is_url, local_copy, local_path
from tessera.data.ingest.sources import link_loops
from tessera.export import display_turns, upright


def probe_video(path: str | Path) -> dict:
    """Duration, frame rate, size, codec and bit rate of a video, or {"reason", "detail"} when it cannot be used.

    Besides reading the header, the first frame and a frame near the end are decoded, so a
    file cut short by a failed download is found here and not in a later stage. A URL is
    fetched to the local cache first (`remote.py`).
    """
    if is_url(path):
        try:
            path = local_copy(str(path))
        except Exception as e:  # noqa: BLE001 - whatever the filesystem raises, the file cannot be used
            return reject("unreadable", f"cannot fetch the file ({type(e).__name__}: {short_error(e)})")
    path = Path(path)
    not_file = _not_a_file(path)
    if not_file:
        return not_file
    try:
        size_bytes = path.stat().st_size
    except OSError as e:
        return reject("unreadable", f"cannot read the file: {e.strerror or e}")
    if size_bytes == 0:
        return reject("empty_file", "the file has 0 bytes")
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                kind = "audio-only" if c.streams.audio else "no streams"
                return reject("no_video_stream", f"no video stream ({kind})")
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
        return reject("not_a_video", f"not a readable video ({type(e).__name__}: {short_error(e)})")
    if not fps > 0:
        return reject("bad_stream", "no frame rate in the video stream")
    if not duration > 0:
        return reject("zero_length", "the video stream has zero duration")
    if w < 16 or h < 16:
        return reject("bad_stream", f"frame size {w}x{h} px is below 16 px")
    # decode the first frame and one near the end: catches truncated downloads
    try:
        first = read_frames(path, [0.0])
        last = read_frames(path, [max(0.0, duration - 1.5 / fps)])
    except (av.error.FFmpegError, OSError, ValueError) as e:
        return reject("undecodable", f"frames do not decode ({type(e).__name__}: {short_error(e)})")
    if len(first) == 0:
        return reject("undecodable", "no frame decodes")
    if len(last) == 0:
        return reject("truncated", f"no frame decodes near the stated end ({duration:.2f} s)")
    info["height_px"], info["width_px"] = (int(n) for n in first.shape[1:3])  # upright, as every later stage reads
    bpp = info["bitrate_bps"] / (w * h * fps)
    info["bits_per_pixel"] = round(bpp, 5)
    return info


def _not_a_file(path: Path) -> dict | None:
    """A rejection for a path that is not a regular file: a symbolic-link loop, a broken link, a folder."""
    if link_loops(path):
        return reject("symlink_loop", "a symbolic link that leads back to itself or to a folder above it; remove it")
    if path.is_symlink() and not path.exists():
        return reject("broken_link", f"a symbolic link to {os.readlink(path)}, which does not exist")
    if path.is_dir():
        return reject("not_a_file", "a folder named like a video; rename it or point SRC at the videos inside")
    if path.exists() and not path.is_file():
        return reject("not_a_file", "not a regular file (a device, pipe or socket)")
    return None


def short_error(e: Exception) -> str:
    return " ".join(str(e).split())[:160]


def reject(reason: str, detail: str) -> dict:
    """A stage result that rejects the item: a short reason code for the summary, a sentence for people."""
    return {"reason": reason, "detail": detail}


# ----------------------------------------------------------------------------- frames


def read_frames(path: str | Path, times_s: list[float] | np.ndarray, fmt: str = "rgb24") -> np.ndarray:
    """Decode the frames nearest to ascending times `times_s` (seconds); uint8 (T, H, W, 3) RGB, upright
    as players show them (a display rotation, as phones record portrait video, is applied).

    `fmt="gray"` gives the decoder's own luma plane (T, H, W) instead: full resolution and
    untouched by chroma up-sampling, which is what sharpness and block measures need.

    Decoding starts at the key frame before the first time, so reading a short clip from a
    long video does not decode the whole file. Times past the end of the video are dropped.
    """
    times = [float(t) for t in times_s]
    if not times:
        raise ValueError("no frame times given")
    out: list[np.ndarray] = []
    with av.open(str(local_path(path))) as c:
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
                    rgb = upright(frame.to_ndarray(format=fmt), display_turns(frame))  # a phone's portrait video
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
