"""Frames -> MP4 (H.264, yuv420p) and back, with PyAV."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from tessera.errors import InputError

PART_SUFFIX = ".part.mp4"  # a temporary file's name ends so, where O_TMPFILE is not available


def check_output_path(path: str | Path) -> Path:
    """`path` as a Path when an MP4 can be written there; InputError saying what to change otherwise.

    Checked before any work: the name ends in .mp4, the folder exists and takes a new file (probed
    by creating and dropping an anonymous one), the name fits the file system, and nothing that is
    not a regular file (a folder, a device) sits at the path.
    """
    text = str(path)
    if not text or "\x00" in text:
        raise InputError(f"output {text!r} is not a usable path; give a file name ending in .mp4")
    path = Path(text)
    try:
        _check_output_path(path)
    except OSError as e:  # e.g. a name too long to look up, a loop of symlinks
        raise InputError(f"output {text[:80]!r} cannot be used ({e.strerror}); choose another -o path") from e
    return path


def _check_output_path(path: Path) -> None:
    if path.suffix.lower() != ".mp4":
        raise InputError(f"output {path} must be a file name ending in .mp4, e.g. out.mp4")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(
            f"output folder {parent} does not exist or is not a folder; create it or choose another -o path"
        )
    if path.is_dir():
        raise InputError(
            f"output {path} is an existing folder; give a file name ending in .mp4, e.g. {path / 'out.mp4'}"
        )
    if path.exists() and not path.is_file():
        raise InputError(f"output {path} exists and is not a regular file (a device or a pipe); choose another -o path")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"output {path} is read-only; choose another -o path or make it writable")
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(path.name)) + len(PART_SUFFIX) + 10 > name_max:
        raise InputError(
            f"output name {path.name[:40]}... is too long for its folder (at most {name_max - len(PART_SUFFIX) - 10} bytes); choose a shorter -o name"
        )
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise InputError(f"output folder {parent} is not writable ({e.strerror}); choose another -o path") from e


def write_mp4(
    frames: np.ndarray,
    path: str | Path,
    fps: int,
    crf: int = 18,
    metadata: dict | None = None,
    on_written: Callable[[Path], None] | None = None,
) -> Path:
    """Write uint8 frames (T, H, W, 3) as H.264 yuv420p at `path`, all or nothing.

    The video is encoded into a file without a name (Linux `O_TMPFILE`) in the target folder and
    linked into place only when complete, so no failure — an exception, SIGTERM, even `kill -9` —
    leaves a partial file behind. Elsewhere a hidden temporary file is used and removed on any
    exception. `on_written(path)` runs once the file is in place (e.g. to append its ledger
    record); if it raises, the new file is removed again, so nothing points at a missing file
    and no file lacks its record.
    """
    path = check_output_path(path)
    if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3):
        raise ValueError(
            f"frames must be uint8 (T, H, W, 3), got {getattr(frames, 'dtype', type(frames))} {getattr(frames, 'shape', '')}"
        )
    t, h, w, _ = frames.shape
    if t < 1 or h < 2 or w < 2 or h % 2 or w % 2:
        raise ValueError(f"H.264 with yuv420p needs at least one frame of even sizes, got {t} frames of {w}×{h}")
    try:
        _write_whole(frames, path, fps, crf, metadata)
    except (OSError, av.error.FFmpegError) as e:  # a full disk, a quota, a folder gone or made read-only
        raise InputError(
            f"writing {path} failed ({' '.join(str(e).split())}); nothing was written there: check the space and "
            "permissions of its folder or choose another -o path"
        ) from e
    if on_written is not None:
        written = os.stat(path)
        try:
            on_written(path)
        except BaseException:
            with contextlib.suppress(OSError):
                if os.path.samestat(written, os.stat(path)):
                    os.unlink(path)
            raise
    return path


def _write_whole(frames: np.ndarray, path: Path, fps: int, crf: int, metadata: dict | None) -> None:
    """Encode into an unnamed file in the target folder and link it into place, or the named fallback."""
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = _anonymous_file(folder)
        if fd is None:
            _write_named(frames, path, fps, crf, metadata)
        else:
            try:
                _encode(frames, f"/proc/self/fd/{fd}", fps, crf, metadata)
                os.fsync(fd)
                _link_into_place(fd, folder, path.name)
            finally:
                os.close(fd)
    finally:
        os.close(folder)


def _anonymous_file(folder: int) -> int | None:
    """An unnamed file in `folder` (a directory fd) that vanishes with the process, or None if unsupported."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(".", flag | os.O_RDWR, 0o666, dir_fd=folder)
    except OSError:  # a file system without O_TMPFILE: use a named temporary file
        return None


def _link_into_place(fd: int, folder: int, name: str) -> None:
    """Give the unnamed file `fd` the name `name` in `folder`, replacing what was there."""
    src = f"/proc/self/fd/{fd}"
    try:
        os.link(src, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=True)
        return
    except FileExistsError:
        pass
    hidden = f".{name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}"
    os.link(src, hidden, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=True)
    try:
        os.replace(hidden, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(hidden, dir_fd=folder)
        raise


def _write_named(frames: np.ndarray, path: Path, fps: int, crf: int, metadata: dict | None) -> None:
    """Fallback without O_TMPFILE: a hidden temporary file beside `path`, removed on any exception."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=PART_SUFFIX)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        try:
            _encode(frames, tmp, fps, crf, metadata)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _encode(frames: np.ndarray, target: str, fps: int, crf: int, metadata: dict | None) -> None:
    """Encode uint8 frames (T, H, W, 3) as H.264 yuv420p MP4 into the file named `target`.

    FFmpeg opens and writes the file itself. Handing it a Python file object instead would run
    every write through PyAV's callback, which swallows a KeyboardInterrupt or Terminated raised
    there by a signal handler, so Ctrl-C or SIGTERM could be ignored and the file finished anyway.
    """
    _, h, w, _ = frames.shape
    with av.open("file:" + os.path.abspath(target), mode="w", format="mp4") as container:
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


def display_turns(frame: av.VideoFrame) -> int:
    """Quarter turns counterclockwise (np.rot90's k) that show a decoded frame as players show it.

    Phones store portrait video as landscape pixels plus a display matrix that rotates them
    (`frame.rotation`: degrees counterclockwise, -90 for a phone held upright); frames read
    for editing or training are turned upright with `upright`.
    """
    return round((getattr(frame, "rotation", 0) or 0) / 90) % 4


def upright(pixels: np.ndarray, turns: int) -> np.ndarray:
    """(H, W, ...) pixels turned `turns` quarter turns counterclockwise (see `display_turns`)."""
    return np.ascontiguousarray(np.rot90(pixels, k=turns)) if turns else pixels


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode a video file to uint8 frames (T, H, W, 3), as coded (a display rotation is not applied:
    the watermark lives in the coded pixels), and its frame rate.

    A path that is not a readable video raises InputError (a FileNotFoundError when it does not
    exist) saying what was found.
    """
    text = str(path)
    try:
        is_file = "\x00" not in text and Path(text).is_file()
    except OSError:  # a name too long to look up, a loop of symlinks
        is_file = False
    if not is_file:
        raise VideoNotFound(f"video {text[:200]!r} does not exist or is not a file; check the path")
    path = Path(text)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path} has no video stream; give an MP4 or another video file")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 0)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except (av.error.FFmpegError, OSError) as e:
        raise InputError(f"{path} is not a readable video ({' '.join(str(e).split())[:200]}); check the file") from e
    if not frames:
        raise InputError(f"{path} has no decodable frames; check the file")
    return np.stack(frames), fps


class VideoNotFound(InputError, FileNotFoundError):
    """The video to read does not exist (or is not a file)."""


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
