"""Damaged copies of real files for the robustness tests: checkpoints with edited config metadata,
files cut short or with flipped bits."""

from __future__ import annotations

import json
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
