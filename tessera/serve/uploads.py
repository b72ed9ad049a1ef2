"""Uploads are checked before they are stored: declared type, size, real type from the first bytes,
decodable, size in pixels and frame count. They are stored under a server-chosen name; the
client's file name is never used for anything.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from tessera.errors import InputError

CHUNK_BYTES = 1 << 20
DECLARED_TYPES = {
    "video/mp4",
    "video/quicktime",
    "video/webm",
    "video/x-matroska",
    "image/png",
    "image/jpeg",
    "application/octet-stream",  # browsers send this for unknown extensions; the bytes decide
}


class UploadRejected(InputError):
    """An upload the server will not store; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class CheckedUpload:
    path: Path  # under the uploads folder, named by the server
    kind: str  # "mp4" | "webm" | "png" | "jpeg"
    width: int
    height: int
    frames: int


def sniff(head: bytes) -> str | None:
    """The container from the first bytes, or None when it is none we accept."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


def save_checked(
    upload_file, content_type: str | None, folder: Path, max_bytes: int, max_side_px: int, max_frames: int
) -> CheckedUpload:
    """Copy a stream (`read(n)`) into `folder` under a new name, and keep it only if it passes every check."""
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared not in DECLARED_TYPES:
        raise UploadRejected(
            415, f"upload type {declared or 'missing'!r} is not accepted; send an MP4, WebM, PNG or JPEG file"
        )
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{uuid.uuid4().hex}.part"
    try:
        size, head = _copy_capped(upload_file, tmp, max_bytes)
        if size == 0:
            raise UploadRejected(400, "the upload is empty; attach a video or image file")
        kind = sniff(head)
        if kind is None:
            raise UploadRejected(415, "the upload is not an MP4, WebM, PNG or JPEG file (checked from its first bytes)")
        width, height, frames = _probe_capped(tmp, max_side_px, max_frames)
        final = folder / f"{uuid.uuid4().hex}.{kind}"
        os.replace(tmp, final)
        return CheckedUpload(final, kind, width, height, frames)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_capped(src, dst: Path, max_bytes: int) -> tuple[int, bytes]:
    size, head = 0, b""
    with open(dst, "wb") as f:
        while chunk := src.read(CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                raise UploadRejected(
                    413, f"the upload is over {max_bytes // (1 << 20)} MiB; send a shorter or smaller file"
                )
            if len(head) < 16:
                head += chunk[:16]
            f.write(chunk)
    return size, head


def _probe_capped(path: Path, max_side_px: int, max_frames: int) -> tuple[int, int, int]:
    """(width, height, frames) after decoding every frame; rejects before decoding when the header is too big."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UploadRejected(422, "the upload has no video or image stream")
            stream = container.streams.video[0]
            w, h = stream.codec_context.width, stream.codec_context.height
            _check_side(w, h, max_side_px)
            n = 0
            for frame in container.decode(stream):
                _check_side(frame.width, frame.height, max_side_px)
                n += 1
                if n > max_frames:
                    raise UploadRejected(422, f"the upload has more than {max_frames} frames; trim it")
    except av.error.FFmpegError as e:
        raise UploadRejected(
            422, f"the upload could not be decoded ({type(e).__name__}); send a complete, playable file"
        ) from e
    if n == 0:
        raise UploadRejected(422, "the upload has no decodable frames; send a complete, playable file")
    return w, h, n


def _check_side(w: int, h: int, max_side_px: int) -> None:
    if not (0 < w <= max_side_px and 0 < h <= max_side_px):
        raise UploadRejected(422, f"the upload is {w}×{h} px; at most {max_side_px} px a side is accepted")


def read_frames(path: Path, max_frames: int) -> np.ndarray:
    """The first `max_frames` frames (T, H, W, 3) uint8 of a checked upload."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= max_frames:
                break
    return np.stack(frames)
