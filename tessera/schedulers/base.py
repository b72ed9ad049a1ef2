"""What every flow-matching scheduler shares: the shifted time grid and the stepping state."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from tessera.diffusion.flow import shift_time


def time_grid(steps: int, shift: float) -> torch.Tensor:
    """(steps + 1,) times from 1 (noise) to 0 (data), spaced by the same shift as training."""
    return shift_time(torch.linspace(1.0, 0.0, steps + 1), shift)


@dataclass
class SchedulerConfig:
    """What `save_pretrained` writes to `scheduler/scheduler_config.json`."""

    kind: str = "euler"


class FlowScheduler:
    """Base class: subclasses set `order` and implement `_times` (optional) and `step`.

    After `set_timesteps(n, shift)`:
      sigmas     (n + 1,) the interval ends, from 1 to 0;
      timesteps  (m,) the times the model is called at, in order (m = n for one-call solvers).
    `step` is called once per entry of `timesteps`, in order; `step_index` counts the calls.
    """

    name = "base"
    order = 1

    def __init__(self) -> None:
        self.sigmas = torch.empty(0)
        self.timesteps = torch.empty(0)
        self.step_index = 0

    @property
    def config(self) -> SchedulerConfig:
        return SchedulerConfig(kind=self.name)

    def to_dict(self) -> dict:
        return asdict(self.config)

    def set_timesteps(self, num_inference_steps: int, shift: float = 1.0) -> None:
        if not 1 <= num_inference_steps <= 1000:
            raise ValueError(f"steps {num_inference_steps} is outside 1–1000")
        self.sigmas = time_grid(num_inference_steps, shift)
        self.timesteps = self._times(self.sigmas)
        self.step_index = 0
        self.reset()

    def _times(self, sigmas: torch.Tensor) -> torch.Tensor:
        return sigmas[:-1]

    def reset(self) -> None:
        """Clear solver history (multistep buffers); called by `set_timesteps`."""

    def step(self, velocity: torch.Tensor, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
