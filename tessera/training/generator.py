"""The generation checkpoint a training run writes: VAE and DiT weights in one file."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from tessera import checkpoint
from tessera.config import ModelConfig, model_config_from_dict
from tessera.models.autoencoder import load_video_vae
from tessera.models.vae import VideoVAE


def generator_tensors(vae: VideoVAE, dit: torch.nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights of a generation checkpoint, stored in bf16 (statistics buffers stay fp32)."""
    dit_state = dit if isinstance(dit, dict) else dit.state_dict()
    out = {f"vae.{k}": (v if k.startswith("latent_") else v.to(torch.bfloat16)) for k, v in vae.state_dict().items()}
    out.update({f"dit.{k}": v.to(torch.bfloat16) for k, v in dit_state.items()})
    return out


def save_generator(
    path: Path, model_cfg: ModelConfig, vae: VideoVAE, dit: dict[str, torch.Tensor], name: str, steps: int
) -> None:
    """Write a generation checkpoint (atomically) that `tessera generate --checkpoint` reads."""
    tensors = generator_tensors(vae, dit)
    checkpoint.save(path, tensors, asdict(model_cfg), kind="generator", name=name, steps=str(steps))


def replace_vae(generator: str | Path, vae_path: str | Path, out: str | Path) -> None:
    """Write `out`: the generation checkpoint `generator` with its VAE replaced by the one at `vae_path`.

    Only meant for a VAE with the same latent space (a fine-tuned decoder): the DiT is kept as it is.
    """
    tensors, config, meta = checkpoint.load(generator)
    if meta.get("kind") != "generator":
        raise checkpoint.CheckpointError(f"{generator} is not a generation checkpoint (kind {meta.get('kind')!r})")
    vae = load_video_vae(vae_path)
    dit = checkpoint.split_prefix(tensors, "dit")
    model_cfg = model_config_from_dict(config)
    model_cfg.vae = vae.cfg
    checkpoint.save(out, generator_tensors(vae, dit), asdict(model_cfg), **meta)
