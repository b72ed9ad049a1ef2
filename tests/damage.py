"""Damaged copies of real files for the robustness tests: checkpoints with edited config metadata,
files cut short or with flipped bits; a video as a phone records it."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file


def with_config(src: Path, dst: Path, config_text: str | None = None, edit=None, **meta: str) -> Path:
    """Copy checkpoint `src` to `dst` with its config metadata replaced by `config_text`, or by
    `edit(config_dict)` applied to a copy of the parsed config; `meta` overrides other metadata."""
    tensors = load_file(str(src))
    with safe_open(str(src), framework="pt") as f:
        metadata = dict(f.metadata())
    if edit is not None:
        config = json.loads(metadata["config"])
        edit(config)
        config_text = json.dumps(config)
    if config_text is not None:
        metadata["config"] = config_text
    metadata.update(meta)
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def truncated(data: bytes, keep: int) -> bytes:
    return data[: max(0, min(keep, len(data)))]


def bit_flipped(data: bytes, positions: list[int]) -> bytes:
    """`data` with one bit flipped at each of `positions` (byte offsets, taken modulo the length)."""
    out = bytearray(data)
    for i, pos in enumerate(positions):
        out[pos % len(out)] ^= 1 << (i % 8)
    return bytes(out)


def portrait_phone_video(src: Path, dst: Path) -> Path:
    """Copy MP4 `src` to `dst` with the display matrix of a phone held upright: players show the coded
    frames turned 90° clockwise (the 'tkhd' box's matrix, as phones write it)."""
    data = bytearray(src.read_bytes())
    i = data.find(b"tkhd")
    version = data[i + 4]
    # after the box type: version+flags 4, creation+modification 8 (16), track id 4, reserved 4,
    # duration 4 (8), reserved 8, layer, group, volume, reserved 8; then the 3x3 matrix, 9 x 32 bits
    at = i + 4 + 4 + (8 if version == 0 else 16) + 8 + (4 if version == 0 else 8) + 8 + 8
    matrix = (0, 1 << 16, 0, (-1 << 16) & 0xFFFFFFFF, 0, 0, 0, 0, 1 << 30)
    data[at : at + 36] = struct.pack(">9I", *matrix)
    dst.write_bytes(bytes(data))
    return dst
