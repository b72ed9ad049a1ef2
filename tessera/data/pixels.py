"""Pixel clips as the VAE takes them."""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, H, W) in [-1, 1]."""
    x = torch.from_numpy(frames).float().div(127.5).sub(1.0)
    return rearrange(x, "t h w c -> c t h w")
