"""Latent cache: world clips encoded once by the VAE, with their candidate training texts.

Training the DiT never decodes or renders video: it reads latents and texts from
safetensors shards (`shard_00000.safetensors`, ... each `clips_per_shard` clips; the format
of `tessera.data.shards`). Shards are written atomically and skipped when present, so an
interrupted build resumes where it stopped and gives the same result. A shard's config records
its clips (size, frames, the world's settings) and the VAE that encoded them (SHA-256 of its
weights); one made with other settings or another VAE is encoded again, never trained on.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from tqdm import tqdm

from tessera import checkpoint
from tessera.data.shards import SHARD_GLOB, load_latent_groups, shard_name, write_shard
from tessera.data.world.captions import caption, simple_prompt
from tessera.data.world.samples import clip_rng
from tessera.data.world.scenes import WorldConfig, render, sample_spec
from tessera.models.vae import VideoVAE

log = logging.getLogger(__name__)

__all__ = ["build_latent_cache", "clip_texts", "load_latent_groups"]


def clip_texts(spec, rng: np.random.Generator, wording: str = "template") -> list[str]:
    """Candidate training texts of one clip: short title, plain prompt (one object), two long captions."""
    texts = [spec.title, caption(spec, rng, wording), caption(spec, rng, wording)]
    if spec.kind == "shapes" and len(spec.objects) == 1:
        o = spec.objects[0]
        texts.append(simple_prompt(o.colour, o.shape, o.motion, spec.background))
    return texts


def _render_clip(job: tuple) -> tuple[np.ndarray, list[str]]:
    """One world clip: uint8 frames (T, H, W, 3) and its candidate texts (runs in a worker process)."""
    index, frames, height_px, width_px, world = job
    rng = clip_rng(world.seed, index)
    spec = sample_spec(rng, width_px / height_px, world)
    return render(spec, frames, height_px, width_px), clip_texts(spec, rng, world.wording)


@torch.no_grad()
def _cached(path: Path, meta: dict) -> bool:
    """Whether the shard at `path` holds these clips encoded by this VAE; another one (older settings, another
    wording or VAE, a damaged file) is encoded again rather than trained on."""
    if not path.exists():
        return False
    try:
        _, have, _ = checkpoint.load(path, skip=("latents",))
    except checkpoint.CheckpointError:
        have = None
    if have == json.loads(json.dumps(meta)):
        return True
    log.info("%s holds other clips or another VAE's latents; encoding it again", path)
    return False


def build_latent_cache(
    vae: VideoVAE,
    out: Path,
    clips: int,
    frames: int,
    height_px: int,
    width_px: int,
    world: WorldConfig,
    clips_per_shard: int = 256,
    batch: int = 8,
    first_index: int = 0,
    device: torch.device | str = "cpu",
    workers: int = 1,
) -> list[Path]:
    """Encode world clips `first_index ..` (`clips` of them) into shards under `out`; returns the shard paths.

    Clips are rendered by `workers` processes (each clip depends only on its index, so the
    result does not depend on the number of workers) and encoded by `vae` on `device`
    (the VAE is moved there and stays there).
    """
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    vae = vae.to(device)
    encoder = checkpoint.tensors_sha256(vae.state_dict())  # which VAE made the latents
    paths = []
    n_shards = (clips + clips_per_shard - 1) // clips_per_shard
    bar = tqdm(total=clips, desc="encode", mininterval=5)
    # forkserver: a fork of a process that already runs threads (torch, a server, a test runner) can deadlock
    pool = mp.get_context("forkserver").Pool(workers) if workers > 1 else None
    try:
        for s in range(n_shards):
            path = out / shard_name(s)
            paths.append(path)
            lo, hi = s * clips_per_shard, min(clips, (s + 1) * clips_per_shard)
            meta = {
                "frames": frames,
                "height_px": height_px,
                "width_px": width_px,
                "seed": world.seed,
                "first": first_index + lo,
                "world": asdict(world),
                "vae_sha256": encoder,
            }
            if _cached(path, meta):
                bar.update(hi - lo)
                continue
            jobs = [(first_index + i, frames, height_px, width_px, world) for i in range(lo, hi)]
            rendered = pool.imap(_render_clip, jobs, chunksize=2) if pool else map(_render_clip, jobs)
            latents, texts, pixels = [], [], []
            for i, (clip, clip_text) in enumerate(rendered):
                pixels.append(torch.from_numpy(clip))
                texts.append(clip_text)
                if len(pixels) == batch or lo + i + 1 == hi:
                    x = torch.stack(pixels).to(device).float().div(127.5).sub(1.0)  # (b, T, H, W, 3)
                    x = rearrange(x, "b t h w c -> b c t h w")
                    with torch.autocast(device.type, dtype=torch.bfloat16):
                        latents.append(vae.encode(x).to(torch.bfloat16).cpu())  # (b, C, T', H', W')
                    bar.update(len(pixels))
                    pixels = []
            write_shard(path, torch.cat(latents), texts, meta)
    finally:
        if pool:
            pool.terminate()
    bar.close()
    for stale in sorted(set(out.glob(SHARD_GLOB)) - set(paths)):  # an earlier build of more clips: not trained on
        log.info("removing %s: this cache holds %d clips", stale, clips)
        stale.unlink()
    return paths
