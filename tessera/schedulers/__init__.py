"""Flow-matching schedulers behind one interface, in the style of diffusers' FlowMatch schedulers.

A scheduler turns a step count into the times at which the model is evaluated and moves
the sample from one time to the next. The pipeline never knows which solver it runs:

    scheduler.set_timesteps(25, shift=3.0)
    for t in scheduler.timesteps:            # times in (0, 1], t = 1 is pure noise
        v = model(x, t)                      # the predicted velocity dx/dt = noise - x0
        x = scheduler.step(v, t, x)

Convention (tessera.diffusion.flow): x_t = (1 - t)·x0 + t·noise; sampling integrates
dx/dt = v from t = 1 down to t = 0. `order` is the solver's order of accuracy; a
scheduler may ask for several model calls per interval (Heun: 2), so `timesteps` can be
longer than the step count.
"""

from __future__ import annotations

from tessera.schedulers.base import FlowScheduler, SchedulerConfig, time_grid
from tessera.schedulers.dpm import FlowMatchDPMSolverScheduler
from tessera.schedulers.euler import FlowMatchEulerScheduler
from tessera.schedulers.heun import FlowMatchHeunScheduler

SCHEDULERS: dict[str, type[FlowScheduler]] = {
    "euler": FlowMatchEulerScheduler,
    "heun": FlowMatchHeunScheduler,
    "dpm++2m": FlowMatchDPMSolverScheduler,
}


def register_scheduler(name: str, cls: type[FlowScheduler]) -> None:
    """Make `cls` available by name (CLI `--scheduler NAME`, `scheduler_config.json`)."""
    SCHEDULERS[name] = cls


def get_scheduler(name: str = "euler") -> FlowScheduler:
    """A new scheduler by name; raises ValueError listing the known names."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(sorted(SCHEDULERS))}")
    return SCHEDULERS[name]()


__all__ = [
    "FlowScheduler",
    "SchedulerConfig",
    "FlowMatchEulerScheduler",
    "FlowMatchHeunScheduler",
    "FlowMatchDPMSolverScheduler",
    "SCHEDULERS",
    "get_scheduler",
    "time_grid",
]
