"""Latent shards: the format both the shapes world and `tessera prepare` write, and the trainer reads.

A shard is one safetensors file `shard_NNNNN.safetensors` holding `latents` (N, C, T', H', W')
bf16 of clips of one shape, the candidate training texts of each clip as JSON in the
`texts` metadata, and a small config (frames, height_px, width_px, ...). Writes are atomic.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tessera import checkpoint

SHARD_GLOB = "shard_*.safetensors"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


def write_shard(path: str | Path, latents: torch.Tensor, texts: list[list[str]], meta: dict) -> None:
    """Atomically write latents (N, C, T', H', W') with each clip's texts; `meta` is the shard's config."""
    if len(texts) != len(latents):
        raise ValueError(f"{len(latents)} latents but {len(texts)} text lists; give one text list per clip")
    checkpoint.save(path, {"latents": latents.to(torch.bfloat16)}, meta, texts=json.dumps(texts))


def load_latent_groups(root: str | Path) -> list[tuple[torch.Tensor, list[list[str]]]]:
    """Every shard under `root` (any depth), grouped by latent shape.

    Returns one (latents (N, C, T', H', W') bf16, texts per clip) per shape, sorted by shape,
    so a dataset may mix aspect ratios and lengths.
    """
    paths = sorted(Path(root).rglob(SHARD_GLOB))
    if not paths:
        raise FileNotFoundError(
            f"no latent shards under {root}; build them with `tessera train dit` or `tessera prepare`"
        )
    groups: dict[tuple[int, ...], tuple[list[torch.Tensor], list[list[str]]]] = {}
    for p in paths:
        tensors, _, meta = checkpoint.load(p)
        z = tensors["latents"]
        lat, texts = groups.setdefault(tuple(z.shape[1:]), ([], []))
        lat.append(z)
        texts += json.loads(meta["texts"])
    return [(torch.cat(groups[k][0]), groups[k][1]) for k in sorted(groups)]
