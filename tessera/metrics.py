"""Reconstruction metrics for videos: PSNR and SSIM, both averaged over frames.

Videos are (B, 3, T, H, W) tensors in [-1, 1] (what the VAE takes and returns), so the
data range is 2. SSIM uses an 11-tap Gaussian window (sigma 1.5) with the usual constants
K1 = 0.01, K2 = 0.03, computed per channel (or on BT.601 luma) and per frame, then averaged.
It is differentiable, so it can also serve as a training loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

DATA_RANGE = 2.0  # [-1, 1]


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 5:
        raise ValueError(f"expected two videos of one shape (B, C, T, H, W), got {tuple(a.shape)} and {tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = DATA_RANGE) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each video in the batch: (B,). MSE over all frames and pixels."""
    _check_pair(a, b)
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(dim=1).clamp_min(1e-12)  # (B,)
    return 10 * torch.log10(data_range**2 / mse)


def luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) RGB -> (B, 1, T, H, W) BT.601 luma."""
    w = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size,) normalised 1D Gaussian."""
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    data_range: float = DATA_RANGE,
    window: int = 11,
    sigma: float = 1.5,
    on_luma: bool = False,
) -> torch.Tensor:
    """Structural similarity of each video in the batch: (B,), the mean SSIM map over channels and frames.

    Only positions where the whole window fits are used (no padding), as in the original
    definition; frames must be at least `window` pixels on each side.
    """
    _check_pair(a, b)
    if min(a.shape[-2:]) < window:
        raise ValueError(f"frames of {a.shape[-2]}×{a.shape[-1]} px are smaller than the {window}-px SSIM window")
    a, b = a.float(), b.float()
    if on_luma:
        a, b = luma(a), luma(b)
    n = a.shape[0]
    a = rearrange(a, "b c t h w -> (b c t) 1 h w")
    b = rearrange(b, "b c t h w -> (b c t) 1 h w")
    g = gaussian_window(window, sigma).to(a.device)

    def blur(v: torch.Tensor) -> torch.Tensor:  # separable Gaussian filter, valid region only
        v = F.conv2d(v, g.view(1, 1, -1, 1))
        return F.conv2d(v, g.view(1, 1, 1, -1))

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.view(n, -1).mean(dim=1)  # (B,)
