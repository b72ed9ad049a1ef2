"""Train the tiny DiT from the command line (for tests that need a separate process: torchrun, kill -9).

usage: train_tiny_dit.py VAE OUT STEPS [--slow-checkpoints]
"""

import sys
import time
from pathlib import Path

from tessera import checkpoint
from tessera.config import PRESETS
from tessera.train import DiTTrainConfig, train_dit

vae, out, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
if "--slow-checkpoints" in sys.argv:
    # widen the window between checkpoints so the test can kill the run in the middle
    save = checkpoint.save

    def slow_save(*args, **kwargs):
        save(*args, **kwargs)
        time.sleep(0.3)

    checkpoint.save = slow_save
cfg = DiTTrainConfig(
    steps=steps,
    batch=4,
    lr=1e-3,
    warmup_steps=2,
    checkpoint_every=2,
    log_every=1,
    clips=8,
    frames=5,
    height_px=32,
    width_px=32,
    eval_every=0,
    peak_tflops=1.0,  # skip measuring the matmul peak
    bf16=False,  # fp32 so one and two processes can be compared tightly
)
train_dit(out, PRESETS["tiny"], vae, cfg)
