"""Train the tiny DiT from the command line (for tests that need a separate process: torchrun, kill -9).

usage: train_tiny_dit.py VAE OUT STEPS [--stop-at N] [--slow-checkpoints]

Each rank also writes OUT/shard_bytes.rank{r}.json: the bytes of parameters and optimiser
state it holds, to check that FSDP shards them.
"""

import json
import sys
import time
from pathlib import Path

import torch

from tessera import checkpoint
from tessera import distributed as D
from tessera.config import PRESETS
from tessera.training import DiTTrainConfig, DiTTrainer


def main() -> None:
    vae, out, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    stop_at = int(sys.argv[sys.argv.index("--stop-at") + 1]) if "--stop-at" in sys.argv else 0
    if "--slow-checkpoints" in sys.argv:
        # widen the window between checkpoints so the test can kill the run in the middle
        save = checkpoint.save

        def slow_save(*args, **kwargs):
            save(*args, **kwargs)
            time.sleep(0.3)

        checkpoint.save = slow_save
    cfg = DiTTrainConfig(
        steps=steps,
        stop_at=stop_at,
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
    trainer = DiTTrainer(out, PRESETS["tiny"], vae, cfg)
    trainer.train()
    held = [D.local(p) for p in trainer.dit.parameters()]
    held += [D.local(v) for st in trainer.opt.state.values() for v in st.values() if torch.is_tensor(v) and v.dim()]
    size = sum(t.numel() * t.element_size() for t in held)
    (out / f"shard_bytes.rank{trainer.d.rank}.json").write_text(json.dumps({"world": trainer.d.world, "bytes": size}))


if __name__ == "__main__":  # render workers start from a fresh interpreter that imports this file
    main()
