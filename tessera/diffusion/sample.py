"""Samplers: Euler integration of the flow ODE with classifier-free guidance."""

from __future__ import annotations

from collections.abc import Callable

import torch

from tessera.diffusion.flow import shift_time


def time_grid(steps: int, shift: float) -> torch.Tensor:
    """(steps + 1,) times from 1 (noise) to 0 (data), spaced by the same shift as training."""
    return shift_time(torch.linspace(1.0, 0.0, steps + 1), shift)


@torch.no_grad()
def euler_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    steps: int,
    shift: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) from t = 1 to 0 in `steps` Euler steps.

    velocity(x (B, ...), t (B,)) -> (B, ...). Returns the final x, same shape as `noise`.
    """
    x = noise
    ts = time_grid(steps, shift)
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        v = velocity(x, t.expand(x.shape[0]))
        x = x + (t_next - t) * v
        if progress is not None:
            progress(i + 1, steps)
    return x


def guided(model, cond: dict, uncond: dict, guidance: float):
    """Wrap a DiT into a velocity function with classifier-free guidance (one batched call)."""

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if guidance == 1.0:
            return model(x, t, **cond)
        both = {k: torch.cat([uncond[k], cond[k]]) for k in cond}
        v_u, v_c = model(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)
        return v_u + guidance * (v_c - v_u)

    return velocity
