"""One conditioning mechanism for every edit: known latents, and the noise level each token is held at.

Every task is a list of `ConditioningItem`s (a video or an image, where in time it goes, an
optional keep-mask, a strength). `encode_items` turns them into a `Condition`:

    latents  (B, C, T', H', W')  the clean latents of everything the items cover
    levels   (B, 1, T', H', W')  each position's noise level c in [0, 1]; 1 = free (generated)

Sampling then runs the ordinary scheduler over the whole latent. A token with level c is
*held* at noise level c while the clip's time t is above c (its value is the flow path
(1 - c)·x0 + c·noise, the model is told its time is c), and is denoised with the rest once
t falls to c. c = 0 (strength 1) keeps a token exactly: extend, interpolate, animate and
inpaint. c = 0.6 on every token starts the whole clip from its input noised to 0.6: restyle.
Training draws the same levels from random mask strategies (`sample_levels`), so one model
does every task, and text-to-video (no items) is the case of all levels 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange, reduce, repeat

from tessera.errors import InputError


@dataclass
class Condition:
    """Known latents and per-position noise levels for a batch (see the module docstring)."""

    latents: torch.Tensor  # (B, C, T', H', W') clean latents; anything where levels == 1
    levels: torch.Tensor  # (B, 1, T', H', W') noise level c per position, constant within a token

    def to(self, device) -> Condition:
        return Condition(self.latents.to(device), self.levels.to(device))

    def repeat(self, n: int) -> Condition:
        """The same condition for n videos of a batch (from a batch of one)."""
        return Condition(self.latents.expand(n, *self.latents.shape[1:]), self.levels.expand(n, *self.levels.shape[1:]))

    def token_times(self, t: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
        """t (B,) the clip's time -> (B, N) each token's time min(t, c), in `patchify` order."""
        pt, ph, pw = patch
        c = reduce(self.levels, "b 1 (t pt) (h ph) (w pw) -> b (t h w)", "max", pt=pt, ph=ph, pw=pw)
        return torch.minimum(t[:, None].to(c), c)

    def hold(self, x: torch.Tensor, noise: torch.Tensor, t_now: float, t_next: float) -> torch.Tensor:
        """After a step from t_now to t_next: put every token still held (c < t_now) on its path.

        Held tokens (c < t_next) sit at (1 - c)·x0 + c·noise; tokens released by this step
        (t_next <= c < t_now) join the rest at (1 - t_next)·x0 + t_next·noise; free tokens
        are left as the scheduler made them. With t_now = 1 this gives the starting latents.
        """
        m = torch.minimum(self.levels, torch.full_like(self.levels, float(t_next)))
        on_path = (1 - m) * self.latents + m * noise
        return torch.where(self.levels < t_now, on_path, x)


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class MaskConfig:
    """How often training draws each mask strategy (the rest: plain text-to-video)."""

    first: float = 0.14  # the first 1..T'-1 latent frames kept: extend, animate
    last: float = 0.05  # the last frames kept: extend backwards
    ends: float = 0.08  # first and last frames kept: interpolate
    frames: float = 0.05  # random single frames kept: keyframes
    box: float = 0.10  # a box over a time range generated, the rest kept: inpaint
    partial: float = 0.25  # share of kept tokens held at a random level below t instead of 0 (strength < 1)

    @property
    def total(self) -> float:
        return self.first + self.last + self.ends + self.frames + self.box


def sample_levels(
    grid: tuple[int, int, int], t: torch.Tensor, cfg: MaskConfig, generator: torch.Generator
) -> torch.Tensor:
    """Token levels (B, T', H'', W'') on the token grid for clip times t (B,): 1 where generated.

    Each sample draws one strategy of `cfg` (or none); a kept token gets level 0, or with
    probability `cfg.partial` a level drawn uniformly below the sample's t.
    """
    gt, gh, gw = grid
    b = len(t)
    levels = torch.ones(b, gt, gh, gw)
    u = torch.rand(b, generator=generator)
    edges = torch.tensor([cfg.first, cfg.last, cfg.ends, cfg.frames, cfg.box]).cumsum(0)
    kind = torch.bucketize(u, edges, right=True)  # 0..4 a strategy, 5 none
    for i in range(b):
        keep = _strategy_keep(int(kind[i]), (gt, gh, gw), generator)
        if keep is None:
            continue
        level = 0.0
        if torch.rand(1, generator=generator).item() < cfg.partial:
            level = float(t[i]) * torch.rand(1, generator=generator).item()
        levels[i][keep] = level
    return levels


def _randint(lo: int, hi: int, generator: torch.Generator) -> int:
    """Uniform in [lo, hi] (inclusive)."""
    return int(torch.randint(lo, hi + 1, (1,), generator=generator))


def _strategy_keep(kind: int, grid: tuple[int, int, int], g: torch.Generator) -> torch.Tensor | None:
    """(T', H'', W'') bool of kept tokens for strategy `kind`; None for text-to-video or a 1-frame clip."""
    gt, gh, gw = grid
    if kind >= 5 or (gt < 2 and kind != 4):
        return None
    keep = torch.zeros(gt, gh, gw, dtype=torch.bool)
    if kind == 0:
        keep[: _randint(1, gt - 1, g)] = True
    elif kind == 1:
        keep[gt - _randint(1, gt - 1, g) :] = True
    elif kind == 2:
        n = _randint(1, max(1, (gt - 1) // 2), g)
        keep[:n], keep[gt - n :] = True, True
    elif kind == 3:
        keep[torch.rand(gt, generator=g) < 0.3] = True
        keep[_randint(0, gt - 1, g)] = True
        if keep.all():
            keep[_randint(0, gt - 1, g)] = False
    else:
        keep[:] = True
        y0, x0 = _randint(0, gh - 1, g), _randint(0, gw - 1, g)
        y1, x1 = _randint(y0 + 1, gh, g), _randint(x0 + 1, gw, g)
        t0 = _randint(0, gt - 1, g)
        t1 = _randint(t0 + 1, gt, g)
        keep[t0:t1, y0:y1, x0:x1] = False
    return keep


def expand_levels(token_levels: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """(B, T'', H'', W'') token levels -> (B, 1, T', H', W') per latent position."""
    pt, ph, pw = patch
    return repeat(token_levels, "b t h w -> b 1 (t pt) (h ph) (w pw)", pt=pt, ph=ph, pw=pw)


# ----------------------------------------------------------------------------- items -> condition


@dataclass
class ConditioningItem:
    """Known pixels placed in the output video.

    frames    (T, H, W, 3) uint8 at the output's size; T = 1 for an image
    start     the output frame that frames[0] lands on
    strength  1: kept exactly; 0 < s < 1: held at noise level 1 - s, then regenerated with the rest
    keep      (T, H, W) bool, optional: True where the item is kept (inpaint leaves a hole)

    An image at a start other than 0 is held for one latent frame (temporal-factor frames):
    the VAE encodes every later latent frame from a group of frames, not from one.
    """

    frames: np.ndarray
    start: int = 0
    strength: float = 1.0
    keep: np.ndarray | None = None

    def __post_init__(self):
        f = np.asarray(self.frames)
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8 or len(f) == 0:
            raise InputError(f"conditioning frames must be uint8 (T, H, W, 3) with T >= 1; got {f.dtype} {f.shape}")
        if not 0 < self.strength <= 1:
            raise InputError(f"conditioning strength {self.strength} is outside (0, 1]")
        if self.start < 0:
            raise InputError(f"conditioning start frame {self.start} is negative")
        if self.keep is not None and np.asarray(self.keep).shape != f.shape[:3]:
            raise InputError(f"keep mask {np.asarray(self.keep).shape} does not match the frames {f.shape[:3]}")


def _latent_span(start: int, count: int, tf: int, t_latent: int) -> tuple[int, int]:
    """Latent frames [j0, j1) whose pixel frames all lie in [start, start + count): frame 0 is latent 0,
    frames 1 + tf·(j - 1) .. tf·j are latent j."""
    end = min(start + count, 1 + tf * (t_latent - 1))  # exclusive, clipped to the output
    j0 = 0 if start == 0 else 1 + math.ceil((start - 1) / tf)
    j1 = 1 + (end - 1) // tf if end >= 1 else 0  # latents fully inside: the last complete group
    return j0, max(j0, min(j1, t_latent))


def _pixel_range(j0: int, j1: int, tf: int) -> tuple[int, int]:
    """Pixel frames [p0, p1) that latent frames [j0, j1) are made from."""
    return (0 if j0 == 0 else 1 + tf * (j0 - 1)), 1 + tf * (j1 - 1)


@torch.no_grad()
def encode_items(vae, geometry, items: list[ConditioningItem], frames: int, height_px: int, width_px: int) -> Condition:
    """Encode every item where it goes in a (frames, height_px, width_px) video -> a Condition for one video.

    Items must already be at the output's size (tessera.edit resizes). Where items overlap,
    the later item wins. Each item is encoded on its own, aligned to the latent frames it
    covers (a group after frame 0 is encoded after a copy of its first frame, which is then
    dropped), so the latents are those of the item, not of a canvas with made-up pixels.
    """
    c, t_lat, h_lat, w_lat = geometry.latent_shape(frames, height_px, width_px)
    tf, sf = geometry.temporal_factor, geometry.spatial_factor
    latents = torch.zeros(1, c, t_lat, h_lat, w_lat)
    levels = torch.ones(1, 1, t_lat, h_lat, w_lat)
    device = next(vae.parameters()).device
    for item in items:
        pixels, keep = np.asarray(item.frames), item.keep
        if pixels.shape[1:3] != (height_px, width_px):
            raise InputError(
                f"a conditioning item is {pixels.shape[2]}x{pixels.shape[1]} px but the video is {width_px}x{height_px}"
            )
        if len(pixels) == 1 and item.start > 0:  # an image later in time fills one latent group
            j = math.ceil(item.start / tf)  # the latent group holding frame `start`
            pixels = np.repeat(pixels, tf, axis=0)
            keep = None if keep is None else np.repeat(np.asarray(keep), tf, axis=0)
            start = 1 + tf * (j - 1)
        else:
            start = item.start
        j0, j1 = _latent_span(start, len(pixels), tf, t_lat)
        if j1 <= j0:
            raise InputError(
                f"a conditioning item of {len(pixels)} frames at frame {item.start} covers no whole latent frame "
                f"of a {frames}-frame video (frame 0, or groups of {tf} frames after it)"
            )
        p0, p1 = _pixel_range(j0, j1, tf)
        clip = pixels[p0 - start : p1 - start]
        if j0 > 0:
            clip = np.concatenate([clip[:1], clip])  # a causal first frame, dropped after encoding
        x = torch.from_numpy(clip).to(device).float().div(127.5).sub(1.0)
        x = rearrange(x, "t h w c -> 1 c t h w")
        with torch.autocast(device.type, dtype=torch.bfloat16):
            z = vae.encode(x).float().cpu()
        z = z[:, :, 1:] if j0 > 0 else z  # (1, C, j1 - j0, H', W')
        kept = torch.ones(1, 1, j1 - j0, h_lat, w_lat, dtype=torch.bool)
        if keep is not None:
            kept = _kept_latents(np.asarray(keep, dtype=bool)[p0 - start : p1 - start], j0 == 0, tf, sf)
        kept = _whole_tokens(kept, (geometry.patch_t, geometry.patch_hw, geometry.patch_hw))
        span = slice(j0, j1)
        latents[:, :, span] = torch.where(kept, z, latents[:, :, span])
        levels[:, :, span] = torch.where(
            kept, torch.full_like(kept, 1 - item.strength, dtype=torch.float), levels[:, :, span]
        )
    return Condition(latents, levels)


def _kept_latents(keep: np.ndarray, from_zero: bool, tf: int, sf: int) -> torch.Tensor:
    """Pixel keep mask (T, H, W) -> (1, 1, T', H', W') bool: a latent cell is kept when all its pixels are."""
    k = torch.from_numpy(keep)
    first = k[:1].all(0, keepdim=True) if from_zero else None
    rest = k[1:] if from_zero else k
    groups = reduce(rest.float(), "(t a) h w -> t h w", "min", a=tf) if len(rest) else None
    k = torch.cat([x for x in (first.float() if first is not None else None, groups) if x is not None])
    cells = reduce(k, "t (h a) (w b) -> t h w", "min", a=sf, b=sf)
    return (cells > 0.5)[None, None]


def _whole_tokens(kept: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """A token is kept only when every latent cell in it is (levels are constant within a token)."""
    pt, ph, pw = patch
    tokens = reduce(kept.float(), "b c (t pt) (h ph) (w pw) -> b c t h w", "min", pt=pt, ph=ph, pw=pw)
    return repeat(tokens > 0.5, "b c t h w -> b c (t pt) (h ph) (w pw)", pt=pt, ph=ph, pw=pw)
