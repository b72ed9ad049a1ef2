"""First-order Euler steps along the predicted velocity."""

from __future__ import annotations

import torch

from tessera.schedulers.base import FlowScheduler


class FlowMatchEulerScheduler(FlowScheduler):
    """x_{i+1} = x_i + (t_{i+1} - t_i) · v(x_i, t_i): one model call per step, order 1."""

    name = "euler"
    order = 1

    def step(self, velocity: torch.Tensor, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        i = self.step_index
        dt = self.sigmas[i + 1] - self.sigmas[i]
        self.step_index += 1
        return x + dt * velocity
