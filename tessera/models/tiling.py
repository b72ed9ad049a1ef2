"""Tiled and chunked encode / decode for the causal VideoVAE, with bounded memory.

Space: the input is cut into overlapping tiles (decode: tiles of the latent; encode: tiles
of the pixels, on the same grid times the spatial factor). Each tile's output is weighted
by a mask that ramps linearly from ~0 to 1 across the overlap on every side that has a
neighbour, and the weighted sum is divided by the summed weights, so no seam is visible.

Time: chunks are exact, not blended. The VAE is causal: every CausalConv3d pads the front
of its input with copies of frame 0, and the time down/up-samplers duplicate / drop frame 0.
While a `CausalCache` is active, each of these modules keeps the last frames of the input it
saw (kernel - 1 frames for a convolution, one frame for a sampler) and, on the next chunk,
prepends them and drops the outputs they produce. A chunked pass therefore equals the
whole-clip pass up to floating-point rounding. The first chunk is latent frame 0 (pixel
frame 0) alone, later chunks are `chunk_latent_frames` latent frames (4× as many pixel
frames), so every chunk boundary falls on a pair boundary of the time samplers.

    cfg = TilingConfig(tile_latent=32, overlap_latent=8, chunk_latent_frames=4)
    video = tiled_decode(vae, z, cfg)     # (B, 3, T, H, W), same as vae.decode(z)
    z = tiled_encode(vae, video, cfg)     # same as vae.encode(video)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tessera.models.vae import CausalConv3d, Downsample, Upsample, VideoVAE


@dataclass
class TilingConfig:
    tile_latent: int = 32  # spatial tile side in latent cells (× spatial factor in pixels: 512 px for 16×)
    overlap_latent: int = 8  # overlap of neighbouring tiles in latent cells, blended with linear ramps
    chunk_latent_frames: int = 4  # latent frames per temporal chunk after the first (latent frame 0 alone)

    def __post_init__(self) -> None:
        if self.tile_latent < 1 or self.chunk_latent_frames < 1:
            raise ValueError(
                f"tile_latent ({self.tile_latent}) and chunk_latent_frames ({self.chunk_latent_frames}) "
                "must be at least 1; try TilingConfig() for the defaults"
            )
        if not 0 <= self.overlap_latent < self.tile_latent:
            raise ValueError(
                f"overlap_latent {self.overlap_latent} must be in [0, tile_latent = {self.tile_latent}); "
                f"try {self.tile_latent // 4}"
            )


# ----------------------------------------------------------------------------- time: causal cache


class CausalCache:
    """Context manager: while active, the causal modules of `model` carry their past frames between calls.

    Use a fresh cache for every independent sequence (every spatial tile); the cache holds
    references to the last frames only, so its memory is a few frames of activations.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.past: dict[nn.Module, torch.Tensor] = {}
        self.prefix: dict[nn.Module, int] = {}
        self.handles: list = []

    def __enter__(self) -> CausalCache:
        for m in self.model.modules():
            keep = 0
            if isinstance(m, CausalConv3d):
                keep = m.pad_t
            elif isinstance(m, (Downsample, Upsample)) and m.time:
                keep = 1  # any past frame works: the frames it produces are dropped
            if keep:
                self.handles.append(m.register_forward_pre_hook(self._pre_hook(keep)))
                self.handles.append(m.register_forward_hook(self._post_hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.past.clear()

    def _pre_hook(self, keep: int) -> Callable:
        def hook(module: nn.Module, args: tuple) -> tuple:
            (x,) = args  # (B, C, T, H, W)
            past = self.past.get(module)
            n = 0 if past is None else past.shape[2]
            if past is not None:
                x = torch.cat([past, x], dim=2)  # (B, C, n + T, H, W)
            # a short sequence keeps fewer frames; the module's own padding with frame 0 supplies the rest
            self.past[module] = x[:, :, -keep:].detach()
            # samplers turn the one past frame into one output frame (after their own frame-0 handling)
            self.prefix[module] = n
            return (x,)

        return hook

    def _post_hook(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        n = self.prefix.pop(module)
        return out[:, :, n:] if n else out


def _latent_chunks(latent_frames: int, chunk: int) -> list[tuple[int, int]]:
    """[(start, stop)] over latent frames: frame 0 alone, then `chunk` frames at a time."""
    bounds = [(0, 1)]
    for a in range(1, latent_frames, chunk):
        bounds.append((a, min(a + chunk, latent_frames)))
    return bounds


def _pixel_range(start: int, stop: int, temporal_factor: int) -> tuple[int, int]:
    """Pixel frames produced by latent frames [start, stop): latent 0 -> frame 0, latent k -> 4k-3..4k."""

    def end(k: int) -> int:  # pixel frames covered by latent frames [0, k)
        return 0 if k == 0 else 1 + (k - 1) * temporal_factor

    return end(start), end(stop)


# ----------------------------------------------------------------------------- space: tiles and ramps


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length), the last one flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(size: int, overlap: int, lead: bool, trail: bool) -> torch.Tensor:
    """(size,) weights: linear ramp up over the first `overlap` cells if `lead`, down over the last if `trail`."""
    w = torch.ones(size)
    if overlap > 0:
        r = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap  # (overlap,), in (0, 1)
        if lead:
            w[:overlap] = torch.minimum(w[:overlap], r)
        if trail:
            w[-overlap:] = torch.minimum(w[-overlap:], r.flip(0))
    return w


def _blend_tiles(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    out_shape: tuple[int, ...],
    in_scale: int,
    out_scale: int,
    cfg: TilingConfig,
) -> torch.Tensor:
    """Run `fn` on overlapping spatial tiles of `x` and blend the outputs.

    Tiles are laid out on the latent grid; `in_scale` / `out_scale` are the pixels per
    latent cell of the input and output (1 for latents, the spatial factor for pixels).
    """
    h_lat, w_lat = x.shape[3] // in_scale, x.shape[4] // in_scale
    tile, ov = cfg.tile_latent, cfg.overlap_latent
    ys, xs = _tile_starts(h_lat, tile, ov), _tile_starts(w_lat, tile, ov)
    if len(ys) == 1 and len(xs) == 1:
        return fn(x)
    out = torch.zeros(out_shape, dtype=torch.float32)
    weight = torch.zeros(out_shape[-2:], dtype=torch.float32)  # (H_out, W_out)
    for y0 in ys:
        th = min(tile, h_lat - y0)
        wy = _ramp(th * out_scale, ov * out_scale, lead=y0 > 0, trail=y0 + th < h_lat)
        for x0 in xs:
            tw = min(tile, w_lat - x0)
            wx = _ramp(tw * out_scale, ov * out_scale, lead=x0 > 0, trail=x0 + tw < w_lat)
            piece = x[:, :, :, y0 * in_scale : (y0 + th) * in_scale, x0 * in_scale : (x0 + tw) * in_scale]
            y = fn(piece).float().cpu()  # (B, C_out, T_out, th·out_scale, tw·out_scale), gathered on the CPU
            mask = wy[:, None] * wx[None, :]  # (th·out_scale, tw·out_scale)
            oy, ox = slice(y0 * out_scale, (y0 + th) * out_scale), slice(x0 * out_scale, (x0 + tw) * out_scale)
            out[..., oy, ox] += y * mask
            weight[oy, ox] += mask
            del y
    return out.div_(weight)


# ----------------------------------------------------------------------------- public API


@torch.no_grad()
def chunked_decode_raw(vae: VideoVAE, z_raw: torch.Tensor, chunk_latent_frames: int) -> torch.Tensor:
    """Raw (denormalised) latent (B, C, T', h, w) -> pixels (B, 3, T, h·s, w·s), decoded chunk by chunk in time."""
    dtype = next(vae.decoder.parameters()).dtype
    outs = []
    with CausalCache(vae.decoder):
        for a, b in _latent_chunks(z_raw.shape[2], chunk_latent_frames):
            outs.append(vae.decoder(z_raw[:, :, a:b].to(dtype)).float())  # (B, 3, frames of chunk, H, W)
    return torch.cat(outs, dim=2)


@torch.no_grad()
def chunked_encode_raw(vae: VideoVAE, x: torch.Tensor, chunk_latent_frames: int) -> torch.Tensor:
    """Pixels (B, 3, T, H, W) -> raw latent mean (B, C, T', H/s, W/s), encoded chunk by chunk in time."""
    tf = vae.temporal_factor
    latent_frames = 1 + (x.shape[2] - 1) // tf
    outs = []
    with CausalCache(vae.encoder):
        for a, b in _latent_chunks(latent_frames, chunk_latent_frames):
            p0, p1 = _pixel_range(a, b, tf)
            mean, _ = vae.encoder(x[:, :, p0:p1]).float().chunk(2, dim=1)  # (B, C, b - a, h, w)
            outs.append(mean)
    return torch.cat(outs, dim=2)


@torch.no_grad()
def tiled_decode(vae: VideoVAE, z: torch.Tensor, cfg: TilingConfig | None = None) -> torch.Tensor:
    """Normalised latent (B, C, T', h, w) -> pixels (B, 3, 1 + 4(T'-1), 16h, 16w); `vae.decode` in bounded memory.

    Peak memory grows with the tile and chunk size, not with the video: the output
    (float32) plus one tile-chunk of decoder activations.
    """
    cfg = cfg or TilingConfig()
    if z.ndim != 5 or z.shape[1] != vae.cfg.latent_channels:
        raise ValueError(
            f"expected a latent (B, {vae.cfg.latent_channels}, T', H', W'), got shape {tuple(z.shape)}; "
            "pass what VideoVAE.encode returns"
        )
    s, tf = vae.spatial_factor, vae.temporal_factor
    b, _, t_lat, h, w = z.shape
    out_shape = (b, 3, 1 + (t_lat - 1) * tf, h * s, w * s)
    z_raw = vae.denormalise(z.float())
    return _blend_tiles(lambda t: chunked_decode_raw(vae, t, cfg.chunk_latent_frames), z_raw, out_shape, 1, s, cfg)


@torch.no_grad()
def tiled_encode(vae: VideoVAE, x: torch.Tensor, cfg: TilingConfig | None = None) -> torch.Tensor:
    """Pixels (B, 3, T, H, W) in [-1, 1] -> normalised latent mean; `vae.encode` in bounded memory."""
    cfg = cfg or TilingConfig()
    vae.check_input(x.shape[2], x.shape[3], x.shape[4])
    s, tf = vae.spatial_factor, vae.temporal_factor
    b, _, t, h, w = x.shape
    out_shape = (b, vae.cfg.latent_channels, 1 + (t - 1) // tf, h // s, w // s)
    z = _blend_tiles(lambda p: chunked_encode_raw(vae, p, cfg.chunk_latent_frames), x, out_shape, s, 1, cfg)
    return vae.normalise(z)


class TiledVAE(nn.Module):
    """A VideoVAE whose encode / decode run tiled and chunked; same interface, same results up to the blend."""

    def __init__(self, vae: VideoVAE, cfg: TilingConfig | None = None):
        super().__init__()
        self.vae, self.tiling = vae, cfg or TilingConfig()

    spatial_factor = property(lambda self: self.vae.spatial_factor)
    temporal_factor = property(lambda self: self.vae.temporal_factor)
    latent_channels = property(lambda self: self.vae.latent_channels)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return tiled_encode(self.vae, pixels, self.tiling)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return tiled_decode(self.vae, latents, self.tiling)
