"""Training samples from the shapes world: pixels for the VAE, (latent, text) pairs for the DiT."""

from __future__ import annotations

import numpy as np
import torch

from tessera.data.pixels import frames_to_tensor
from tessera.data.world.captions import training_text
from tessera.data.world.scenes import ClipSpec, WorldConfig, render, sample_spec

__all__ = ["clip_rng", "frames_to_tensor", "vae_batch", "world_clip"]


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of clip `index` in the dataset with `seed`: order-independent and reproducible."""
    return np.random.default_rng([seed, index])


def world_clip(
    seed: int, index: int, frames: int, height_px: int, width_px: int, cfg: WorldConfig | None = None
) -> tuple[np.ndarray, ClipSpec, str]:
    """Clip `index` of the world with `seed`: (frames uint8 (T, H, W, 3), spec, training text)."""
    cfg = cfg or WorldConfig(seed=seed)
    rng = clip_rng(seed, index)
    spec = sample_spec(rng, width_px / height_px, cfg)
    return render(spec, frames, height_px, width_px), spec, training_text(spec, rng, cfg.wording)


def vae_batch(seed: int, step: int, batch: int, frames: int, size_px: int, pan_fraction: float) -> torch.Tensor:
    """A batch of square pixel clips (B, 3, T, H, W) for VAE training.

    The VAE is convolutional and every norm is per position, so square crops teach it
    every aspect ratio; a fixed shape keeps the CPU's convolution kernels cached.
    """
    h = w = size_px
    cfg = WorldConfig(seed=seed, pan_fraction=pan_fraction, two_object_fraction=0.3, exclude_held_out=False)
    clips = [world_clip(seed + 7919, step * batch + i, frames, h, w, cfg)[0] for i in range(batch)]
    return torch.stack([frames_to_tensor(c) for c in clips])
