"""One interface for every video autoencoder, so the rest of Tessera does not care which one it holds.

    vae = load_video_vae()                        # the bundled VideoVAE
    vae = DiffusersVAE.from_folder("models/wan")  # a diffusers-format VAE from a local folder
    z = vae.encode(pixels)   # (B, 3, T, H, W) in [-1, 1] -> normalised latent (B, C, T', H', W')
    x = vae.decode(z)        # and back

Normalised means about zero mean and unit variance per channel, the space the DiT works in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from tessera import checkpoint
from tessera.config import model_config_from_dict, vae_config_from_dict
from tessera.geometry import Geometry
from tessera.models.vae import VideoVAE


@runtime_checkable
class VideoAutoencoder(Protocol):
    """What the pipeline, the latent cache and the benchmarks need from a video autoencoder."""

    @property
    def spatial_factor(self) -> int: ...

    @property
    def temporal_factor(self) -> int: ...

    @property
    def latent_channels(self) -> int: ...

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, 1 + k·temporal_factor, H, W) in [-1, 1] -> normalised latent (B, C, 1 + k, H/s, W/s)."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latent (B, C, T', H', W') -> pixels (B, 3, 1 + (T'-1)·temporal_factor, H'·s, W'·s)."""
        ...


def check_video_shape(vae: VideoAutoencoder, frames: int, height_px: int, width_px: int) -> None:
    """Raise InputError (a ValueError) with the nearest valid sizes when `vae` cannot encode a video of this shape."""
    Geometry.of(vae, output=False).check_video(frames, height_px, width_px)


# ----------------------------------------------------------------------------- our VideoVAE


def load_video_vae(path: str | Path | None = None) -> VideoVAE:
    """A VideoVAE from a VAE checkpoint or from the VAE part of a generation checkpoint; default: the bundled one."""
    path = Path(path) if path else checkpoint.bundled_path()
    return video_vae_from_checkpoint(path, *checkpoint.load(path))


def video_vae_from_checkpoint(path: Path, tensors: dict, config: dict, meta: dict) -> VideoVAE:
    """The one way a VideoVAE is built from a loaded checkpoint (VAE or generation); CheckpointError if it does not fit."""
    try:
        if meta.get("kind") == "generator":
            cfg = model_config_from_dict(config).vae
            tensors = checkpoint.split_prefix(tensors, "vae")
        else:
            cfg = vae_config_from_dict(config)
    except ValueError as e:
        raise checkpoint.CheckpointError(f"{path}: its VAE config is not valid ({e})") from e
    vae = VideoVAE(cfg)
    try:
        vae.load_state_dict({k: v.float() for k, v in tensors.items()})
    except RuntimeError as e:
        raise checkpoint.CheckpointError(
            f"{path}: VAE weights do not match its config ({str(e).splitlines()[0]})"
        ) from e
    return vae.eval()


# ----------------------------------------------------------------------------- diffusers VAEs


def _diffusers_classes() -> dict[str, type]:
    from diffusers import AutoencoderKLCogVideoX, AutoencoderKLWan

    return {"AutoencoderKLWan": AutoencoderKLWan, "AutoencoderKLCogVideoX": AutoencoderKLCogVideoX}


class DiffusersVAE(torch.nn.Module):
    """A diffusers video VAE (Wan 2.1 or CogVideoX) behind the VideoAutoencoder interface.

    Latents are normalised with the model's own statistics: `latents_mean` / `latents_std`
    when its config has them (Wan), otherwise `(z - shift_factor) × scaling_factor`
    (CogVideoX). Encoding returns the posterior mean.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        cfg = model.config
        name = type(model).__name__
        if name == "AutoencoderKLWan":
            self._spatial = int(cfg.get("scale_factor_spatial") or 2 ** (len(cfg["dim_mult"]) - 1))
            self._temporal = int(cfg.get("scale_factor_temporal") or 2 ** sum(cfg["temperal_downsample"]))
            self._channels = int(cfg["z_dim"])
        else:
            self._spatial = 2 ** (len(cfg["block_out_channels"]) - 1)
            self._temporal = int(cfg["temporal_compression_ratio"])
            self._channels = int(cfg["latent_channels"])
        mean, std = cfg.get("latents_mean"), cfg.get("latents_std")
        if mean is not None and std is not None:
            shift, scale = torch.tensor(mean, dtype=torch.float32), 1.0 / torch.tensor(std, dtype=torch.float32)
        else:
            shift = torch.full((self._channels,), float(cfg.get("shift_factor") or 0.0))
            scale = torch.full((self._channels,), float(cfg.get("scaling_factor") or 1.0))
        if shift.numel() != self._channels or scale.numel() != self._channels:
            raise ValueError(
                f"{name} has {self._channels} latent channels but {shift.numel()} latent statistics in its config; "
                "fix latents_mean / latents_std in config.json"
            )
        self.register_buffer("shift", shift.view(1, -1, 1, 1, 1))
        self.register_buffer("scale", scale.view(1, -1, 1, 1, 1))

    @classmethod
    def from_folder(cls, folder: str | Path, dtype: torch.dtype = torch.float32) -> DiffusersVAE:
        """Load from a local diffusers folder (config.json + weights); the class comes from `_class_name`."""
        folder = Path(folder)
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{folder} has no config.json; pass the folder written by save_pretrained (for a full "
                "pipeline download, its vae/ subfolder)"
            )
        name = json.loads(config_path.read_text()).get("_class_name")
        classes = _diffusers_classes()
        if name not in classes:
            raise ValueError(f"{config_path} names {name!r}; supported VAE classes: {', '.join(classes)}")
        model = classes[name].from_pretrained(folder, torch_dtype=dtype, local_files_only=True, use_safetensors=True)
        return cls(model.eval())

    @property
    def spatial_factor(self) -> int:
        return self._spatial

    @property
    def temporal_factor(self) -> int:
        return self._temporal

    @property
    def latent_channels(self) -> int:
        return self._channels

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def encode_moments(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, T, H, W) -> raw posterior mean, logvar (B, C, T', H', W'); differentiable, for training."""
        check_video_shape(self, pixels.shape[2], pixels.shape[3], pixels.shape[4])
        dist = self.model.encode(pixels.to(self._dtype())).latent_dist
        return dist.mean.float(), dist.logvar.float()

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z.to(self._dtype())).sample.float()

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass, as VideoVAE.forward: reconstruction, raw mean, logvar."""
        mean, logvar = self.encode_moments(pixels)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        return self.decode_raw(z), mean, logvar

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        mean, _ = self.encode_moments(pixels)
        return (mean - self.shift) * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 5 or latents.shape[1] != self._channels:
            raise ValueError(f"expected a latent (B, {self._channels}, T', H', W'), got shape {tuple(latents.shape)}")
        return self.decode_raw(latents.float() / self.scale + self.shift)
