"""Video folders for tests and benchmarks of `tessera prepare`: clean clips, corrupted copies, bad files.

Clean clips are rendered from the shapes world and written as H.264 MP4 with the short
title in the file name (`0003_red_circle_left.mp4`). Corruptions imitate what a real
crawl contains: camera shake, blur, heavy compression, under-exposure; bad files are
zero-byte, truncated, random bytes, text and audio-only.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from tessera.data.dataset import world_clip
from tessera.export import write_mp4

CORRUPTIONS = ("shake", "blur", "compress", "dark")
BAD_KINDS = ("zero_byte", "truncated", "random_bytes", "text", "audio_only")


def shake(frames: np.ndarray, rng: np.random.Generator, amplitude_fraction: float = 0.04) -> np.ndarray:
    """Random per-frame translations of up to `amplitude_fraction` of the short side (a hand-held camera)."""
    t, h, w, _ = frames.shape
    amp = amplitude_fraction * min(h, w)
    out = np.empty_like(frames)
    for i, f in enumerate(frames):
        dx, dy = rng.uniform(-amp, amp, size=2)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        out[i] = cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


def blur(frames: np.ndarray, sigma_fraction: float = 0.02) -> np.ndarray:
    """Gaussian blur with sigma `sigma_fraction` of the short side (out of focus)."""
    sigma = sigma_fraction * min(frames.shape[1:3])
    return np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames])


def compress(frames: np.ndarray, jpeg_quality: int = 6) -> np.ndarray:
    """Every frame through JPEG at a very low quality: 8-px blocks and smeared colour."""
    out = []
    for f in frames:
        ok, buf = cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG frame")
        out.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return np.stack(out)


def dark(frames: np.ndarray, gain: float = 0.15) -> np.ndarray:
    """Brightness scaled down to `gain` (an under-exposed shot)."""
    return (frames.astype(np.float32) * gain).round().astype(np.uint8)


def corrupt(frames: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "shake":
        return shake(frames, rng)
    if kind == "blur":
        return blur(frames)
    if kind == "compress":
        return compress(frames)
    if kind == "dark":
        return dark(frames)
    raise ValueError(f"unknown corruption {kind!r}; expected one of {', '.join(CORRUPTIONS)}")


def write_world_videos(
    out: str | Path,
    clips: int,
    seed: int = 0,
    frames: int = 24,
    height_px: int = 128,
    width_px: int = 128,
    fps: int = 8,
    corruption: str | None = None,
    first: int = 0,
) -> list[Path]:
    """Write `clips` shapes-world clips as MP4, optionally corrupted; the short title is in the file name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(first, first + clips):
        pixels, spec, _ = world_clip(seed, i, frames, height_px, width_px)
        name = f"{i:04d}_{spec.title.replace(' ', '_')}"
        if corruption:
            pixels = corrupt(pixels, corruption, np.random.default_rng([seed, i, 7]))
            name += f"_{corruption}"
        paths.append(write_mp4(pixels, out / f"{name}.mp4", fps))
    return paths


def write_audio_only(path: str | Path, duration_s: float = 1.0, rate_hz: int = 16000) -> Path:
    """An AAC file in an MP4 container with no video stream."""
    path = Path(path)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate_hz)
        stream.layout = "mono"
        n = int(duration_s * rate_hz)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / rate_hz)).astype(np.float32)
        for i in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, i : i + 1024], format="fltp", layout="mono")
            frame.sample_rate = rate_hz
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_bad_file(path: str | Path, kind: str, good_video: str | Path | None = None, seed: int = 0) -> Path:
    """One file a crawl can contain that is not a usable video; `truncated` cuts `good_video` to a third."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "truncated":
        if good_video is None:
            raise ValueError("a truncated file needs good_video, the MP4 to cut")
        data = Path(good_video).read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "random_bytes":
        path.write_bytes(rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("this is not a video\n" * 20)
    elif kind == "audio_only":
        write_audio_only(path)
    else:
        raise ValueError(f"unknown bad-file kind {kind!r}; expected one of {', '.join(BAD_KINDS)}")
    return path


def write_bad_files(out: str | Path, good_video: str | Path, seed: int = 0) -> dict[Path, str]:
    """One file of every bad kind under `out`, with video extensions; returns {path: kind}."""
    out = Path(out)
    names = {
        "zero_byte": "empty.mp4",
        "truncated": "truncated.mp4",
        "random_bytes": "noise.mov",
        "text": "notes.mkv",
        "audio_only": "song.mp4",
    }
    made = {}
    for kind, name in names.items():
        made[write_bad_file(out / name, kind, good_video, seed)] = kind
    return made
