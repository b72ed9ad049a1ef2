"""Spacetime patches: latent video <-> token sequence, and each token's 3D position.

A latent (B, C, T, H, W) is cut into (pt × ph × pw) blocks; each block is flattened to
one token of C·pt·ph·pw values, in (t, y, x) raster order. `unpatchify` is the exact
inverse. Any latent size divisible by the patch size works.
"""

from __future__ import annotations

import torch
from einops import rearrange


def check_divisible(t: int, h: int, w: int, patch: tuple[int, int, int]) -> None:
    pt, ph, pw = patch
    if t % pt or h % ph or w % pw:
        raise ValueError(f"latent size (t={t}, h={h}, w={w}) is not divisible by the patch size {patch}")


def patchify(z: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, N, C·pt·ph·pw) with N = (T/pt)(H/ph)(W/pw)."""
    pt, ph, pw = patch
    check_divisible(*z.shape[2:], patch)
    return rearrange(z, "b c (t pt) (h ph) (w pw) -> b (t h w) (c pt ph pw)", pt=pt, ph=ph, pw=pw)


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int]) -> torch.Tensor:
    """(B, N, C·pt·ph·pw) -> (B, C, T, H, W); `grid` is the token grid (T/pt, H/ph, W/pw)."""
    pt, ph, pw = patch
    gt, gh, gw = grid
    return rearrange(
        tokens, "b (t h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)", t=gt, h=gh, w=gw, pt=pt, ph=ph, pw=pw
    )


def grid_positions(grid: tuple[int, int, int], device=None) -> torch.Tensor:
    """(N, 3) float positions (t, y, x) of each token in raster order."""
    gt, gh, gw = grid
    t, y, x = torch.meshgrid(
        torch.arange(gt, device=device), torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij"
    )
    return torch.stack([t, y, x], dim=-1).reshape(-1, 3).float()
