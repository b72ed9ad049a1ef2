"""Rectified flow: the noise path, timestep sampling and the training loss.

Convention: x_t = (1 - t) · x0 + t · noise, t in [0, 1], t = 1 is pure noise. The model
predicts the velocity v = noise - x0, so dx/dt = v and sampling integrates from t = 1
down to t = 0.
"""

from __future__ import annotations

import math

import torch

from tessera.conditioning import expand_levels


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Map t -> s·t / (1 + (s - 1)·t): s > 1 moves time towards the noisy end (SD3 / Wan)."""
    return shift * t / (1 + (shift - 1) * t)


def shift_for(base: float, tokens: int, ref_tokens: int = 0) -> float:
    """The timestep shift for a clip of `tokens` tokens: `base` at `ref_tokens`, growing as sqrt(tokens).

    Bigger or longer clips keep more of their structure at a given noise level, so they
    need more time at the noisy end (SD3's resolution shift, applied to spacetime tokens).
    `ref_tokens` 0 means a constant shift. Training and sampling both call this, so a
    shape is always sampled on the schedule it was trained on.
    """
    if ref_tokens <= 0:
        return base
    return base * math.sqrt(tokens / ref_tokens)


def sample_train_times(n: int, shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Logit-normal(0, 1) times, then shifted: (n,) in (0, 1)."""
    u = torch.randn(n, generator=generator)
    return shift_time(torch.sigmoid(u), shift)


def flow_loss(
    model,
    x0: torch.Tensor,
    cond: dict,
    t: torch.Tensor,
    noise: torch.Tensor,
    token_levels: torch.Tensor | None = None,
    patch: tuple[int, int, int] = (1, 1, 1),
) -> torch.Tensor:
    """MSE between the predicted and the true velocity. x0, noise (B, C, T, H, W); t (B,).

    token_levels (B, T/pt, H/ph, W/pw), optional: conditioning (tessera.conditioning). A token
    of level c < t is held at noise level c and the model is told so; the loss covers only the
    tokens being generated (c >= t), which is what sampling asks of the model.
    """
    tb = t.view(-1, *([1] * (x0.dim() - 1)))
    if token_levels is None:
        xt = (1 - tb) * x0 + tb * noise
        pred = model(xt, t, **cond)
        return (pred.float() - (noise - x0)).pow(2).mean()
    levels = expand_levels(token_levels.to(x0), patch)  # (B, 1, T, H, W)
    tt = torch.minimum(tb, levels)  # (B, 1, T, H, W) each position's time
    xt = (1 - tt) * x0 + tt * noise
    pred = model(xt, torch.minimum(t[:, None], token_levels.flatten(1).to(t)), **cond)
    generated = (levels >= tb).float()  # (B, 1, T, H, W)
    err = (pred.float() - (noise - x0)).pow(2) * generated
    return err.sum() / (generated.sum() * x0.shape[1]).clamp(min=1)
