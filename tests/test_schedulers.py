"""Solvers behind the scheduler interface converge on a flow whose exact solution is known.

Data x0 ~ N(mu, s²) per coordinate, noise ~ N(0, 1), x_t = (1 - t)·x0 + t·noise. The
marginal at t is N(m_t, var_t) with m_t = (1 - t)·mu, var_t = (1 - t)²·s² + t², and the
exact velocity field E[noise - x0 | x_t = x] is (t - (1 - t)·s²) / var_t · (x - m_t) - mu.
Its ODE maps a noise sample z at t = 1 to mu + s·z at t = 0, so the error of a solver
at t = 0 is measurable exactly, and its slope against the step count is the order.

DPM-Solver++ steps in lambda = log((1 - t) / t); on a grid uniform in t the last few
lambda steps near t = 0 do not shrink with n, which adds a log factor (error ~ log(n) / n²),
so its slope is fitted over more steps and on a wider data distribution, where it reaches 2
sooner.
"""

import numpy as np
import pytest
import torch

from tessera.schedulers import SCHEDULERS, get_scheduler

MU, S = 0.7, 0.3


def gaussian_velocity(x: torch.Tensor, t: float, s: float = S) -> torch.Tensor:
    var = (1 - t) ** 2 * s**2 + t**2
    return (t - (1 - t) * s**2) / var * (x - (1 - t) * MU) - MU


def solve(name: str, steps: int, shift: float, z: torch.Tensor, s: float = S) -> tuple[torch.Tensor, int]:
    sched = get_scheduler(name)
    sched.set_timesteps(steps, shift)
    x, calls = z.clone(), 0
    for t in sched.timesteps:
        x = sched.step(gaussian_velocity(x, float(t), s), t, x)
        calls += 1
    assert sched.step_index == len(sched.timesteps) == calls
    return x, calls


@pytest.mark.parametrize(
    "name,order,shift,s,steps",
    [
        ("euler", 1, 1.0, S, [8, 16, 32, 64]),
        ("euler", 1, 3.0, S, [8, 16, 32, 64]),
        ("heun", 2, 1.0, S, [8, 16, 32, 64]),
        ("heun", 2, 3.0, S, [8, 16, 32, 64]),
        ("dpm++2m", 2, 1.0, 0.8, [64, 128, 256, 512]),
    ],
)
def test_solver_error_falls_with_its_order(name, order, shift, s, steps):
    z = torch.randn(4096, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = MU + s * z
    errs = [(solve(name, n, shift, z, s)[0] - exact).abs().max().item() for n in steps]
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.25, f"{name}: errors {errs}, observed order {slope:.2f}, expected {order}"
    assert get_scheduler(name).order == order


def test_second_order_solvers_beat_euler_at_the_same_steps():
    z = torch.randn(1024, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = MU + S * z
    for n in (12, 25):
        err_euler = (solve("euler", n, 3.0, z)[0] - exact).abs().max()
        for name in ("heun", "dpm++2m"):
            assert (solve(name, n, 3.0, z)[0] - exact).abs().max() < err_euler, (name, n)


def test_heun_calls_the_model_twice_per_interval_but_the_last():
    sched = get_scheduler("heun")
    sched.set_timesteps(5, 1.0)
    assert len(sched.timesteps) == 9
    # predictor at t_i, corrector at t_{i+1}: every interior end is visited twice
    assert torch.equal(sched.timesteps[1::2], sched.sigmas[1:5])
    assert torch.equal(sched.timesteps[0::2], sched.sigmas[:5])


def test_set_timesteps_resets_history():
    z = torch.randn(64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for name in SCHEDULERS:
        first, _ = solve(name, 6, 2.0, z)
        sched = get_scheduler(name)
        sched.set_timesteps(3, 2.0)
        x = z.clone()
        for t in sched.timesteps[:2]:  # leave a run half done
            x = sched.step(gaussian_velocity(x, float(t)), t, x)
        sched.set_timesteps(6, 2.0)
        x = z.clone()
        for t in sched.timesteps:
            x = sched.step(gaussian_velocity(x, float(t)), t, x)
        assert torch.equal(x, first), name


def test_unknown_scheduler_lists_the_known_ones():
    with pytest.raises(ValueError, match="dpm\\+\\+2m.*euler.*heun"):
        get_scheduler("ddim")
