"""What a training run is made of, as dataclasses: the run, the VAE stage and the DiT stage.

Each field carries its help text (and, where the command line spells it differently, its
flag) in the field's metadata, so `tessera train` builds its flags from these classes and
a named recipe (`tessera.training.recipes`) is a set of field values. Defaults are the
bundled model's stage 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tessera.config import ModelConfig
from tessera.errors import InputError
from tessera.geometry import Geometry

TIMING_STEPS = 50  # steps timed before a time-limited run fixes its step count
TIMING_FROM = 10  # a time-limited run times steps TIMING_FROM..TIMING_STEPS (the first warm caches up)


def arg(
    default: Any,
    help: str,
    *,
    flag: str = "",
    aliases: tuple[str, ...] = (),
    parse: Callable[[str], Any] | None = None,
    choices: tuple[str, ...] = (),
):
    """A config field with what the command line needs to offer it as a flag.

    `flag` replaces the flag made from the field's name; `aliases` are extra spellings (older
    flags); `parse` turns the flag's text into the field's value (for tuples and units).
    """
    meta = {"help": help, "flag": flag, "aliases": aliases, "parse": parse, "choices": choices}
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------- flag parsers


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """ "256x256,448x256" -> ((256, 256), (256, 448)) as (height, width); WIDTHxHEIGHT like video players."""
    shapes = []
    for part in filter(None, text.split(",")):
        try:
            w, h = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise InputError(f"--shapes entry {part!r} is not WIDTHxHEIGHT, e.g. 448x256") from None
        if w <= 0 or h <= 0:
            raise InputError(f"--shapes entry {part!r}: sides must be positive")
        shapes.append((h, w))  # multiples of the model's unit: checked with its geometry (check_dit_train)
    return tuple(shapes)


def parse_seconds(text: str) -> tuple[float, ...]:
    """ "1,2,4" -> (1.0, 2.0, 4.0)."""
    try:
        return tuple(float(part) for part in filter(None, text.split(",")))
    except ValueError:
        raise InputError(f"--durations-s {text!r} is not a list of seconds, e.g. 1,2,4") from None


def minutes_to_s(text: str) -> float:
    try:
        return float(text) * 60
    except ValueError:
        raise InputError(f"--time-limit-min {text!r} is not a number of minutes, e.g. 8.2") from None


# ----------------------------------------------------------------------------- configs


@dataclass
class RunConfig:
    """Where a run writes and which model it trains (the model's own fields live in tessera.config)."""

    out: str = arg("runs/small", "run folder: the VAE stage writes OUT/vae, the DiT stage OUT/dit")
    preset: str = arg("small", "model preset (tessera.config.PRESETS)", choices=("tiny", "small", "footage", "base"))
    vae: str = arg("", "VAE checkpoint the DiT trains on (default OUT/vae/vae.safetensors, or the dataset's)")
    shift: float | None = arg(None, "timestep shift for training and sampling, 0.1..20 (default: preset)")
    shift_ref_tokens: int | None = arg(None, "tokens at which --shift applies; it grows as sqrt(tokens)")
    decoder_refine_blocks: int | None = arg(None, "extra VAE decoder blocks at full resolution (default: preset)")


@dataclass
class TrainConfig:
    """What both training loops share: optimiser, schedule, checkpoints, logs."""

    steps: int = arg(1000, "optimiser steps")
    batch: int = arg(8, "clips per step")
    lr: float = arg(1e-3, "peak learning rate (AdamW)")
    warmup_steps: int = arg(100, "linear warmup steps before the cosine decay")
    min_lr_fraction: float = arg(0.05, "the cosine decays to this share of the peak learning rate")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    grad_clip: float = arg(1.0, "gradient norm clip")
    seed: int = arg(0, "seed of the initial weights and of every step's data")
    checkpoint_every: int = arg(100, "steps between crash-safe checkpoints")
    log_every: int = arg(10, "steps between log lines")
    bf16: bool = arg(True, "bf16 autocast")
    stop_at: int = arg(0, "stop (checkpointed) after this step, as if interrupted; 0 runs to --steps")
    tensorboard: str = arg("", "also write the log as TensorBoard scalars to this folder")


@dataclass
class VAETrainConfig(TrainConfig):
    """The VAE stage on the shapes world (flags `--vae-*`)."""

    steps: int = arg(1200, "VAE optimiser steps")
    batch: int = arg(6, "VAE clips per step")
    lr: float = arg(1e-3, "VAE peak learning rate (AdamW)")
    checkpoint_every: int = arg(50, "steps between crash-safe checkpoints")
    frames: int = arg(9, "frames of the VAE training clips (1 + 4k)")
    size_px: int = arg(128, "side of the square VAE training clips (px)", aliases=("--vae-size",))
    pan_fraction: float = arg(0.25, "share of photo pans in VAE training clips", aliases=("--pan-fraction",))
    kl_weight: float = arg(1e-4, "weight of the KL term of the VAE loss")
    decoder_from: str = arg(
        "", "fine-tune only the decoder of this VAE or generation checkpoint", aliases=("--decoder-from",)
    )
    init_from: str = arg("", "start the whole VAE from this VAE checkpoint's weights (a new schedule)")
    workers: int = arg(0, "processes rendering the VAE's training clips ahead of the optimiser (0: none)")
    time_limit_s: float = arg(
        0.0, "fit the VAE run into this many minutes (0: run --vae-steps)",
        flag="--vae-time-limit-min", parse=minutes_to_s,
    )  # fmt: skip


@dataclass
class DiTTrainConfig(TrainConfig):
    """The DiT stage on cached VAE latents."""

    steps: int = arg(1900, "DiT optimiser steps (the most a time-limited run takes)", aliases=("--dit-steps",))
    batch: int = arg(16, "clips per step (with --token-budget 0)")
    lr: float = arg(8e-4, "peak learning rate (AdamW)")
    warmup_steps: int = arg(200, "linear warmup steps before the cosine decay", aliases=("--warmup",))
    clips: int = arg(2048, "world clips encoded into the latent cache (split over --shapes)")
    frames: int = arg(17, "pixel frames of each world clip (1 + 4k; 33 = 4 s at 8 fps)")
    height_px: int = arg(256, "height of the world clips without --shapes")
    width_px: int = arg(256, "width of the world clips without --shapes")
    shapes: tuple[tuple[int, int], ...] = arg(
        (), "world clip sizes WIDTHxHEIGHT,... (default: WIDTH_PXxHEIGHT_PX)", parse=parse_shapes
    )
    durations_s: tuple[float, ...] = arg(
        (), "durations trained at, cut from the clips' start, e.g. 1,2,4 (default: full length)", parse=parse_seconds
    )
    token_budget: int = arg(0, "video tokens per global batch (0: batch x tokens of one full clip)")
    grad_accum: int = arg(1, "micro-batches per step (same result, less activation memory)")
    gradient_checkpointing: bool = arg(False, "recompute block activations in the backward pass (less memory)")
    text_dropout: float = arg(0.1, "share of samples trained with the empty prompt (for guidance)")
    edit_masks: bool = arg(
        False, "also train on random conditioning masks (kept frames, boxes) so the model can edit and extend"
    )
    wording: str = arg(
        "template",
        "world captions: the template phrases, the rich vocabularies' train words (rich) or all their words (full)",
        choices=("template", "rich", "full"),
    )  # fmt: skip
    two_objects: float = arg(0.1, "share of world clips with a second object")
    ema_decay: float = arg(0.999, "EMA decay of the weights that are saved")
    eval_every: int = arg(500, "steps between quick adherence checks (0: never)")
    eval_prompts: int = arg(16, "prompts of each quick adherence check")
    eval_steps: int = arg(20, "sampling steps of each quick adherence check")
    eval_seed: int = arg(99, "seed of the quick adherence check's prompts")
    init_from: str = arg("", "start the DiT from this generation checkpoint's weights")
    data_dir: str = arg("", "a `tessera prepare` dataset to train on instead of the shapes world", aliases=("--data",))
    peak_tflops: float = arg(0.0, "the device's bf16 matmul peak for MFU (0: measure it at start, ~2 s)")
    time_limit_s: float = arg(
        0.0, "fit the run into this many minutes, latent cache included (0: run --steps)",
        flag="--time-limit-min", parse=minutes_to_s,
    )  # fmt: skip


# ----------------------------------------------------------------------------- checks


def check_train(cfg: TrainConfig) -> None:
    """Raise InputError on values no run can use."""
    if cfg.steps < 1 or cfg.batch < 1 or cfg.checkpoint_every < 1 or cfg.log_every < 1:
        raise InputError(
            f"steps {cfg.steps}, batch {cfg.batch}, checkpoint_every {cfg.checkpoint_every} and log_every "
            f"{cfg.log_every} must each be at least 1"
        )
    if cfg.warmup_steps < 1 or not (math.isfinite(cfg.lr) and cfg.lr >= 0):
        raise InputError(f"warmup_steps {cfg.warmup_steps} must be at least 1 and lr {cfg.lr} a number, not negative")
    for name in ("min_lr_fraction", "weight_decay", "grad_clip", "time_limit_s"):
        v = getattr(cfg, name, 0.0)
        if not (math.isfinite(v) and v >= 0):
            raise InputError(f"{name} {v} must be a finite number, not negative")


def check_time_limit(cfg: VAETrainConfig | DiTTrainConfig, warmup_flag: str) -> None:
    if cfg.time_limit_s < 0 or (cfg.time_limit_s and cfg.warmup_steps < TIMING_STEPS):
        raise InputError(
            f"a time limit ({cfg.time_limit_s / 60:g} min) needs a positive number of minutes and {warmup_flag} "
            f"of at least {TIMING_STEPS} (got {cfg.warmup_steps}): the step count is fixed after timing "
            f"{TIMING_STEPS} steps, and the schedule must not depend on it before then"
        )


def check_vae_train(cfg: VAETrainConfig, spatial_factor: int, temporal_factor: int) -> None:
    check_train(cfg)
    check_time_limit(cfg, "--vae-warmup-steps")
    if cfg.workers < 0:
        raise InputError(f"--vae-workers {cfg.workers} must be 0 (render in the training process) or more")
    if not 0 <= cfg.pan_fraction <= 1:
        raise InputError(f"--vae-pan-fraction {cfg.pan_fraction} is outside 0..1")
    if cfg.size_px % spatial_factor or cfg.size_px <= 0 or (cfg.frames - 1) % temporal_factor or cfg.frames < 1:
        raise InputError(
            f"--vae-size-px {cfg.size_px} must be a multiple of {spatial_factor} and --vae-frames "
            f"{cfg.frames} of the form 1 + k × {temporal_factor}"
        )


def latent_lengths(durations_s: tuple[float, ...], model_cfg: ModelConfig) -> tuple[int, ...]:
    """Seconds -> latent frame counts at the model's fps (1 + frames / temporal factor), sorted."""
    for s in durations_s:
        if not 0 < s <= model_cfg.max_duration_s:
            raise InputError(f"--durations-s {s} is outside (0, {model_cfg.max_duration_s}]; e.g. 1,2,4")
    t = model_cfg.vae.temporal_factor
    return tuple(sorted({1 + round(s * model_cfg.fps) // t for s in durations_s}))


def check_dit_train(cfg: DiTTrainConfig, model_cfg: ModelConfig | None = None) -> None:
    check_train(cfg)
    if model_cfg is not None:
        latent_lengths(cfg.durations_s, model_cfg)
        geometry = Geometry(
            model_cfg.vae.spatial_factor, model_cfg.vae.temporal_factor, model_cfg.vae.latent_channels,
            patch_t=model_cfg.dit.patch_t, patch_hw=model_cfg.dit.patch_hw,
        )  # fmt: skip
        for h, w in cfg.shapes or ((cfg.height_px, cfg.width_px),):
            geometry.check_size(w, h)
    check_time_limit(cfg, "--warmup-steps")
    if not 0 <= cfg.text_dropout <= 1 or not 0 <= cfg.ema_decay <= 1 or not 0 <= cfg.two_objects <= 1:
        raise InputError(
            f"text_dropout {cfg.text_dropout}, ema_decay {cfg.ema_decay} and two_objects {cfg.two_objects} "
            "must lie in 0..1"
        )
    if cfg.grad_accum < 1 or cfg.eval_every < 0:
        raise InputError(f"grad_accum {cfg.grad_accum} must be at least 1 and eval_every {cfg.eval_every} not negative")
