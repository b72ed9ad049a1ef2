"""Frames -> MP4 (H.264, yuv420p) and back, with PyAV."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np


def check_output_path(path: str | Path) -> Path:
    """Raise OSError with a clear message when `path` cannot be written."""
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"output {path} must end in .mp4")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OSError(f"output folder {parent} does not exist; create it or choose another -o path")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OSError(f"output {path} is not writable; choose another -o path")
    return path


def write_mp4(frames: np.ndarray, path: str | Path, fps: int, crf: int = 18, metadata: dict | None = None) -> Path:
    """Write uint8 frames (T, H, W, 3) as H.264 yuv420p; written to a temp file, then renamed."""
    path = check_output_path(path)
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 with yuv420p needs even sizes, got {w}×{h}")
    tmp = path.with_name(f".{path.stem}.part.mp4")
    with av.open(str(tmp), mode="w") as container:
        for k, v in (metadata or {}).items():
            container.metadata[k] = str(v)
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode a video file to uint8 frames (T, H, W, 3) and its frame rate."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 0)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except av.error.FFmpegError as e:
        raise ValueError(f"{path} is not a readable video ({e})") from e
    if not frames:
        raise ValueError(f"{path} has no decodable frames")
    return np.stack(frames), fps


def probe(path: str | Path) -> dict:
    """Codec, pixel format, size, frame count and metadata of a video file."""
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        n = sum(1 for _ in container.decode(s))
        return {
            "codec": s.codec_context.name,
            "pix_fmt": s.codec_context.pix_fmt,
            "width": s.codec_context.width,
            "height": s.codec_context.height,
            "frames": n,
            "fps": float(s.average_rate or 0),
            "metadata": dict(container.metadata),
        }
