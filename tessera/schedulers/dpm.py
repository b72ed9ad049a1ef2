"""DPM-Solver++(2M) in flow-matching form: one model call per step, second order from history.

With x_t = (1 - t)·x0 + t·noise, the path's coefficients are alpha_t = 1 - t and
sigma_t = t, and its half log-SNR is lambda_t = log((1 - t) / t). The model's velocity
gives a data prediction x0 = x_t - t·v. DPM-Solver++ (Lu et al. 2022) integrates the
ODE exactly in lambda for a data prediction held constant (first order, which equals
one Euler step) or extrapolated linearly from the previous step (2M):

    h = lambda_{i+1} - lambda_i,  r = h_{i-1} / h
    D = (1 + 1/(2r))·x0_i - 1/(2r)·x0_{i-1}
    x_{i+1} = (sigma_{i+1} / sigma_i)·x_i - alpha_{i+1}·(exp(-h) - 1)·D

The first step (from t = 1, lambda = -inf) has no history, and the last (to t = 0,
lambda = +inf) is first order as in diffusers' `lower_order_final`: x_{n} = x0_{n-1}.
"""

from __future__ import annotations

import math

import torch

from tessera.schedulers.base import FlowScheduler


def _lam(t: float) -> float:
    """Half log-SNR of time t; -inf at t = 1 (noise), +inf at t = 0 (data)."""
    if t >= 1.0:
        return -math.inf
    if t <= 0.0:
        return math.inf
    return math.log((1.0 - t) / t)


class FlowMatchDPMSolverScheduler(FlowScheduler):
    """DPM-Solver++(2M) on the flow path; `timesteps` equals `sigmas[:-1]` (n calls for n steps), order 2."""

    name = "dpm++2m"
    order = 2

    def reset(self) -> None:
        self._prev_x0: torch.Tensor | None = None
        self._prev_h = math.inf

    def step(self, velocity: torch.Tensor, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        i = self.step_index
        s, s_next = float(self.sigmas[i]), float(self.sigmas[i + 1])
        self.step_index += 1
        x0 = x - s * velocity  # data prediction
        h = _lam(s_next) - _lam(s)
        if s_next <= 0.0:
            x_next = x0
        elif s >= 1.0:
            x_next = s_next * x + (1.0 - s_next) * x0  # exp(-h) = 0: the Euler step from pure noise
        else:
            d = x0
            if self._prev_x0 is not None and math.isfinite(self._prev_h):
                c = h / (2.0 * self._prev_h)  # 1 / (2r)
                d = (1.0 + c) * x0 - c * self._prev_x0
            x_next = (s_next / s) * x - (1.0 - s_next) * math.expm1(-h) * d
        self._prev_x0, self._prev_h = x0, h
        return x_next
