"""Heun's method (explicit trapezoid): a predictor and a corrector call per interval, order 2."""

from __future__ import annotations

import torch

from tessera.schedulers.base import FlowScheduler


class FlowMatchHeunScheduler(FlowScheduler):
    """For each interval [t_i, t_{i+1}] with dt = t_{i+1} - t_i:

        predictor  x' = x_i + dt · v(x_i, t_i)                    (called at t_i)
        corrector  x_{i+1} = x_i + dt · (v(x_i, t_i) + v(x', t_{i+1})) / 2   (called at t_{i+1})

    The last interval ends at t = 0, where the model was never trained, so it is a plain
    Euler step: one local error of O(dt²) keeps the global order 2. `timesteps` therefore
    has 2n - 1 entries for n steps (model calls = 2n - 1).
    """

    name = "heun"
    order = 2

    def _times(self, sigmas: torch.Tensor) -> torch.Tensor:
        n = len(sigmas) - 1
        times = [sigmas[0]]
        for i in range(n - 1):
            times += [sigmas[i + 1], sigmas[i + 1]]  # corrector of interval i, predictor of i + 1
        return torch.stack(times) if n > 1 else sigmas[:1]

    def reset(self) -> None:
        self._interval = 0
        self._x_start: torch.Tensor | None = None  # x_i while a corrector call is pending
        self._v_start: torch.Tensor | None = None

    def step(self, velocity: torch.Tensor, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        i = self._interval
        dt = self.sigmas[i + 1] - self.sigmas[i]
        self.step_index += 1
        last = i == len(self.sigmas) - 2
        if self._x_start is None and not last:  # predictor: remember where the interval started
            self._x_start, self._v_start = x, velocity
            return x + dt * velocity
        if self._x_start is None:  # final interval: Euler
            self._interval += 1
            return x + dt * velocity
        x_next = self._x_start + dt * (self._v_start + velocity) / 2
        self._x_start = self._v_start = None
        self._interval += 1
        return x_next
