"""The learning-rate schedule, and the step count that fits a run into a time limit."""

from __future__ import annotations

import math

from tessera.training.config import DiTTrainConfig, TrainConfig, VAETrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to `min_lr_fraction` of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * p)))


def fit_steps(cfg: DiTTrainConfig | VAETrainConfig, done: int, elapsed_s: float, s_per_step: float) -> int:
    """The step count that ends a time-limited run inside `cfg.time_limit_s`, `done` steps in.

    Called once, after `TIMING_STEPS` steps: with warmup longer than that, the learning rate so
    far is the same for every step count, so the run is exactly the run with the returned
    step count. 5% of the budget is kept for the last checkpoints.
    """
    left = 0.95 * cfg.time_limit_s - elapsed_s
    return max(done, min(cfg.steps, done + int(left / s_per_step)))
