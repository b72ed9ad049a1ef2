"""Training metrics: JSON lines (optionally mirrored to TensorBoard), throughput and MFU, memory."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch

from tessera.errors import InputError


class MetricsLog:
    """Metrics as JSON lines (one object per write); optionally mirrored as TensorBoard scalars.

    Numbers become scalars at the row's `step`; a nested dict (the adherence `eval`)
    becomes `eval/colour`, `eval/shape`, ...; anything else stays in the JSON only.
    """

    def __init__(self, path: Path, tensorboard: str | Path = ""):
        self.path = path
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise InputError(
                    "--tensorboard needs the tensorboard package: pip install tensorboard "
                    "(or leave it out; the JSON-lines log is always written)"
                ) from e
            self.writer = SummaryWriter(str(tensorboard))

    def write(self, **row) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None and "step" in row:
            for key, value in row.items():
                items = value.items() if isinstance(value, dict) else [("", value)]
                for sub, v in items:
                    if key != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                        self.writer.add_scalar(f"{key}/{sub}" if sub else key, v, row["step"])
            self.writer.flush()


class Throughput:
    """Tokens per second and model FLOPs utilisation since the run (re)started.

    `peak_flops` is one device's bf16 matmul peak; MFU divides by it times the number of processes.
    """

    def __init__(self, peak_flops: float, world: int = 1):
        self.peak, self.world = peak_flops, world
        self.t0, self.tokens, self.flops = time.time(), 0, 0.0

    def add(self, tokens: int, flops: float) -> None:
        self.tokens += tokens
        self.flops += flops

    def row(self) -> dict[str, float]:
        s = max(time.time() - self.t0, 1e-9)
        return {"s": s, "tokens_per_s": self.tokens / s, "mfu": self.flops / s / (self.peak * self.world)}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: allocated on a GPU, resident on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
