"""Optional VAE training terms beyond MSE + edges + KL: structure (SSIM) and realism (a 3D PatchGAN).

Both are off by default (`VAELossConfig()` adds nothing), so earlier runs reproduce.
Neither needs downloaded weights: SSIM is computed here (tessera.metrics), and the
discriminator is a small 3D conv net trained from scratch with the hinge loss, switched on
after `adv_start_step` steps, when reconstructions are already close and the adversarial
signal sharpens detail instead of fighting the reconstruction loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tessera import checkpoint
from tessera.metrics import ssim


@dataclass
class VAELossConfig:
    ssim_weight: float = 0.0  # weight of (1 - SSIM) of the reconstruction; 0 turns it off
    adv_weight: float = 0.0  # weight of the generator hinge loss; 0 turns the discriminator off
    adv_start_step: int = 500  # the discriminator trains and the adversarial term counts from this step
    disc_channels: int = 32  # width of the first discriminator layer (doubling twice)
    disc_lr: float = 2e-4

    @property
    def enabled(self) -> bool:
        return self.ssim_weight > 0 or self.adv_weight > 0


class PatchDiscriminator3D(nn.Module):
    """(B, 3, T, H, W) -> (B, 1, T, H/8, W/8) real/fake logits, one per spacetime patch.

    Strided in space only and padded symmetrically in time: it judges texture and motion
    locally, and the same net works for any frame count and size.
    """

    def __init__(self, channels: int = 32):
        super().__init__()
        c = channels
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate((c, 2 * c, 4 * c)):
            layers.append(nn.Conv3d(cin, cout, (3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1)))
            if i > 0:
                layers.append(nn.GroupNorm(8, cout))
            layers.append(nn.LeakyReLU(0.2))
            cin = cout
        layers.append(nn.Conv3d(cin, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ExtraVAELoss:
    """The optional terms and, when adversarial, the discriminator with its own optimiser."""

    def __init__(self, cfg: VAELossConfig, bf16: bool = True):
        self.cfg, self.bf16 = cfg, bf16
        self.disc = self.opt = None
        if cfg.adv_weight > 0:
            self.disc = PatchDiscriminator3D(cfg.disc_channels)
            self.opt = torch.optim.AdamW(self.disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9), weight_decay=0.0)

    def _adv_on(self, step: int) -> bool:
        return self.disc is not None and step >= self.cfg.adv_start_step

    def generator_terms(self, x: torch.Tensor, recon: torch.Tensor, step: int) -> tuple[torch.Tensor, dict]:
        """Loss to add to the VAE loss at `step`, and its parts for the log."""
        total, parts = recon.new_zeros(()), {}
        if self.cfg.ssim_weight > 0:
            s = ssim(recon, x).mean()
            total = total + self.cfg.ssim_weight * (1 - s)
            parts["ssim"] = s.item()
        if self._adv_on(step):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                g = -self.disc(recon).float().mean()
            total = total + self.cfg.adv_weight * g
            parts["g_adv"] = g.item()
        return total, parts

    def discriminator_step(self, x: torch.Tensor, recon: torch.Tensor, step: int) -> dict:
        """One hinge-loss update of the discriminator on real `x` and detached `recon`."""
        if not self._adv_on(step):
            return {}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            real, fake = self.disc(x).float(), self.disc(recon.detach()).float()
        d = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        self.opt.zero_grad(set_to_none=True)
        d.backward()
        self.opt.step()
        return {"d_hinge": d.item()}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Discriminator weights and optimiser state, prefixed for the training-state file."""
        if self.disc is None:
            return {}
        return {
            **{f"disc.{k}": v for k, v in self.disc.state_dict().items()},
            **checkpoint.optimizer_tensors(self.opt, prefix="disc_opt"),
        }

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.disc is None:
            return
        disc = checkpoint.split_prefix(tensors, "disc")
        if disc:
            self.disc.load_state_dict(disc)
        checkpoint.load_optimizer_tensors(self.opt, tensors, prefix="disc_opt")
