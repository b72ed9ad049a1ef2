"""Causal 3D video VAE.

Pixels (B, 3, T, H, W) in [-1, 1] -> latent (B, C, T', H', W') with
T' = 1 + (T - 1) / temporal_factor and H' = H / spatial_factor, and back.

Design, for quality per FLOP on a CPU:
* the first step is a 4×4 space-to-depth (as LTX-Video does), so convolutions run on a
  16× smaller grid;
* every convolution is causal in time (padded at the front with copies of the first
  frame), and normalisation is RMS over channels at each position: nothing mixes
  information backwards in time or across tiles, so frame k never changes latents before
  it and a single image is a 1-frame video;
* down/up-sampling moves 2×2×2 blocks between space-time and channels; in time the first
  frame is duplicated before pairing, so latent frame 0 encodes frame 0 alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from tessera.config import VAEConfig


class ChannelRMSNorm(nn.Module):
    """RMS norm over the channel axis of (B, C, T, H, W); per position, so causal and tileable."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.float().pow(2).mean(dim=1, keepdim=True).add(self.eps).rsqrt()
        return (x.float() * rms).to(x.dtype) * self.weight


class CausalConv3d(nn.Module):
    """3×3×3 convolution that sees only the current and earlier frames."""

    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__()
        self.pad_t = kernel - 1
        self.pad_s = kernel // 2
        self.conv = nn.Conv3d(cin, cout, kernel, padding=(0, self.pad_s, self.pad_s))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_t:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.pad_t, -1, -1), x], dim=2)
        return self.conv(x)


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = ChannelRMSNorm(channels)
        self.conv1 = CausalConv3d(channels, channels)
        self.norm2 = ChannelRMSNorm(channels)
        self.conv2 = CausalConv3d(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


def _pair_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, 1 + 2m, H, W) -> (B, 2C, 1 + m, H, W): frame 0 duplicated, then pairs stacked."""
    x = torch.cat([x[:, :, :1], x], dim=2)
    return rearrange(x, "b c (t k) h w -> b (c k) t h w", k=2)


def channel_average(x: torch.Tensor, cout: int) -> torch.Tensor:
    """(B, C, ...) -> (B, cout, ...) by averaging groups of C / cout consecutive channels."""
    return x.unflatten(1, (cout, -1)).mean(dim=2)


class Downsample(nn.Module):
    """Halve time (causally) and/or space by moving blocks into channels, then mix with a 1×1×1 conv.

    A parameter-free shortcut (the same blocks, channel-averaged) is added, as in DC-AE's
    residual autoencoding: deep, highly compressing autoencoders train far faster with it.
    """

    def __init__(self, cin: int, cout: int, time: bool):
        super().__init__()
        self.time, self.cout = time, cout
        self.proj = nn.Conv3d(cin * 4 * (2 if time else 1), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time:
            x = _pair_frames(x)  # (B, 2C, T', H, W)
        x = rearrange(x, "b c t (h p) (w q) -> b (c p q) t h w", p=2, q=2)  # (B, 4C·k, T', H/2, W/2)
        return self.proj(x) + channel_average(x, self.cout)


class Upsample(nn.Module):
    """Inverse of Downsample: 1×1×1 conv to blocks (plus duplicated channels as a shortcut),
    blocks back to space-time, drop the duplicate frame."""

    def __init__(self, cin: int, cout: int, time: bool):
        super().__init__()
        self.time = time
        self.blocks = cout * 4 * (2 if time else 1)
        self.proj = nn.Conv3d(cin, self.blocks, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x) + x.repeat_interleave(self.blocks // x.shape[1], dim=1)  # shortcut: channels duplicated
        x = rearrange(x, "b (c p q) t h w -> b c t (h p) (w q)", p=2, q=2)  # (B, kC, T, 2H, 2W)
        if self.time:
            x = rearrange(x, "b (c k) t h w -> b c (t k) h w", k=2)[:, :, 1:]  # (B, C, 2T - 1, 2H, 2W)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        p = cfg.patch_px
        chans = [cfg.base_channels * m for m in cfg.channel_mults]
        self.patch = p
        self.conv_in = CausalConv3d(3 * p * p, chans[0])
        blocks: list[nn.Module] = []
        for i, c in enumerate(chans):
            blocks += [ResBlock(c) for _ in range(cfg.blocks_per_level)]
            if i + 1 < len(chans):
                blocks.append(Downsample(c, chans[i + 1], time=i < cfg.temporal_downsamples))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = ChannelRMSNorm(chans[-1])
        self.conv_out = CausalConv3d(chans[-1], 2 * cfg.latent_channels)
        # start with a small posterior variance, so early training is not drowned in sampling noise
        nn.init.constant_(self.conv_out.conv.bias[cfg.latent_channels :], -6.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 2C, T', H', W'): mean and log-variance stacked on channels."""
        x = rearrange(x, "b c t (h p) (w q) -> b (c p q) t h w", p=self.patch, q=self.patch)
        x = self.blocks(self.conv_in(x))
        moments = self.conv_out(F.silu(self.norm_out(x)))  # (B, 2C, T', H', W')
        shortcut = channel_average(x, moments.shape[1] // 2)
        return moments + torch.cat([shortcut, torch.zeros_like(shortcut)], dim=1)


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        p = cfg.patch_px
        chans = [cfg.base_channels * m for m in cfg.channel_mults][::-1]
        self.patch = p
        self.conv_in = CausalConv3d(cfg.latent_channels, chans[0])
        self.width = chans[0]
        n_levels = len(chans)
        blocks: list[nn.Module] = []
        for i, c in enumerate(chans):
            blocks += [ResBlock(c) for _ in range(cfg.blocks_per_level)]
            if i + 1 < n_levels:
                # the level (counted from the top) mirrors encoder level n_levels - 2 - i
                time = (n_levels - 2 - i) < cfg.temporal_downsamples
                blocks.append(Upsample(c, chans[i + 1], time=time))
        self.blocks = nn.Sequential(*blocks)
        # refine blocks start as the identity, so they can be added to a trained decoder without changing it
        self.refine = nn.Sequential(*[ResBlock(chans[-1]) for _ in range(cfg.decoder_refine_blocks)])
        for block in self.refine:
            nn.init.zeros_(block.conv2.conv.weight)
            nn.init.zeros_(block.conv2.conv.bias)
        self.norm_out = ChannelRMSNorm(chans[-1])
        self.conv_out = CausalConv3d(chans[-1], 3 * p * p)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, T', H', W') -> (B, 3, T, H, W)."""
        x = self.conv_in(z) + z.repeat_interleave(self.width // z.shape[1], dim=1)
        x = self.refine(self.blocks(x))
        x = self.conv_out(F.silu(self.norm_out(x)))
        return rearrange(x, "b (c p q) t h w -> b c t (h p) (w q)", p=self.patch, q=self.patch)


class VideoVAE(nn.Module):
    """Causal 3D VAE with per-channel latent normalisation.

    `encode` returns normalised latents (about zero mean, unit variance per channel on
    the training data); `decode` takes the same. The statistics are buffers, saved with
    the weights.
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))

    @property
    def spatial_factor(self) -> int:
        return self.cfg.spatial_factor

    @property
    def temporal_factor(self) -> int:
        return self.cfg.temporal_factor

    @property
    def latent_channels(self) -> int:
        return self.cfg.latent_channels

    def check_input(self, frames: int, height_px: int, width_px: int) -> None:
        """Raise InputError (a ValueError) with the nearest valid sizes when a video cannot be encoded."""
        from tessera.geometry import Geometry

        Geometry.of(self, output=False).check_video(frames, height_px, width_px)

    def save_pretrained(self, folder) -> None:
        from tessera.pretrained import save_component

        save_component(folder, self, self.cfg)

    @classmethod
    def from_pretrained(cls, folder) -> VideoVAE:
        from tessera.config import VAEConfig, build_config
        from tessera.pretrained import load_component

        return load_component(folder, lambda d: cls(build_config(VAEConfig, d)))

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, T, H, W) -> raw mean, logvar, each (B, C, T', H', W')."""
        self.check_input(x.shape[2], x.shape[3], x.shape[4])
        mean, logvar = self.encoder(x).float().chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_mean.view(1, -1, 1, 1, 1)) / self.latent_std.view(1, -1, 1, 1, 1)

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latent_std.view(1, -1, 1, 1, 1) + self.latent_mean.view(1, -1, 1, 1, 1)

    def encode(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> normalised latent (B, C, T', H', W')."""
        mean, logvar = self.encode_moments(x)
        z = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device)
            z = mean + noise * (0.5 * logvar).exp()
        return self.normalise(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latent (B, C, T', H', W') -> pixels (B, 3, T, H, W), roughly in [-1, 1]."""
        return self.decoder(self.denormalise(z).to(next(self.decoder.parameters()).dtype)).float()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: reconstruction, mean, logvar (raw latent space)."""
        mean, logvar = self.encode_moments(x)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        return self.decoder(z).float(), mean, logvar
