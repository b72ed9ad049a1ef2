"""Training: the VAE on pixels, then the DiT on cached VAE latents, with flow matching.

    config.py     RunConfig, VAETrainConfig, DiTTrainConfig (their fields are the `tessera train` flags)
    recipes.py    the bundled model's stages as named recipes (`--recipe tessera-small:stage5`)
    vae.py        the VAE loop (or a decoder-only fine-tune)
    dit.py        DiTTrainer: data, model, step, checkpoint and eval as small parts
    state.py      one crash-safe, resumable state file for both, which reshards on load
    logs.py       JSON-lines / TensorBoard metrics, throughput and MFU
    schedule.py   warmup + cosine learning rate, fitting a run into a time limit
    generator.py  the generation checkpoint a run writes

Both loops: bf16 autocast, AdamW, exact resume (the data of step k depends only on the
seed and k), `logging` for messages (stdout belongs to the CLI's JSON).
"""

from __future__ import annotations

import importlib

_WHERE = {  # name -> submodule; imported on first use, so the CLI can read configs without torch
    "TIMING_STEPS": "config",
    "DiTTrainConfig": "config",
    "RunConfig": "config",
    "TrainConfig": "config",
    "VAETrainConfig": "config",
    "DiTTrainer": "dit",
    "train_dit": "dit",
    "generator_tensors": "generator",
    "replace_vae": "generator",
    "save_generator": "generator",
    "MetricsLog": "logs",
    "fit_steps": "schedule",
    "lr_at": "schedule",
    "TrainState": "state",
    "saved_step": "state",
    "train_vae": "vae",
    "vae_loss": "vae",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'tessera.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tessera.training.{_WHERE[name]}"), name)
