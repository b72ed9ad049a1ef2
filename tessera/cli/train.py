"""`tessera train vae | dit | recipe`."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from tessera.cli.common import UsageError


def _parse_shapes(text: str | None) -> tuple[tuple[int, int], ...]:
    """ "256x256,448x256" -> ((256, 256), (256, 448)) as (height, width); WIDTHxHEIGHT like video players."""
    if not text:
        return ()
    shapes = []
    for part in text.split(","):
        try:
            w, h = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise UsageError(f"--shapes entry {part!r} is not WIDTHxHEIGHT, e.g. 448x256") from None
        if w % 32 or h % 32:
            raise UsageError(f"--shapes entry {part!r}: sides must be multiples of 32 (VAE 16 x patch 2)")
        shapes.append((h, w))
    return tuple(shapes)


def _latent_lengths(text: str | None, cfg) -> tuple[int, ...]:
    """ "1,2,4" seconds -> latent frame counts at the model's fps (1 + frames / temporal factor)."""
    if not text:
        return ()
    out = []
    for part in text.split(","):
        try:
            seconds = float(part)
        except ValueError:
            raise UsageError(f"--durations-s entry {part!r} is not a number of seconds") from None
        if not 0 < seconds <= cfg.max_duration_s:
            raise UsageError(f"--durations-s {seconds} is outside (0, {cfg.max_duration_s}]")
        out.append(1 + round(seconds * cfg.fps) // cfg.vae.temporal_factor)
    return tuple(sorted(set(out)))


def cmd_train(args: argparse.Namespace) -> int:
    from tessera import checkpoint
    from tessera.config import PRESETS
    from tessera.train import TIMING_STEPS, DiTTrainConfig, TrainConfig, replace_vae, train_dit, train_vae

    out = Path(args.out)
    preset = copy.deepcopy(PRESETS[args.preset])
    if args.shift is not None:
        if not 0.1 <= args.shift <= 20:
            raise UsageError(f"--shift {args.shift} is outside 0.1..20; 1 is no shift, the small preset uses 1.5")
        preset.timestep_shift = args.shift
    if args.shift_ref_tokens is not None:
        preset.shift_ref_tokens = args.shift_ref_tokens
    if args.stage in ("vae", "recipe"):
        cfg = TrainConfig(
            steps=args.vae_steps, batch=args.vae_batch, lr=args.vae_lr, warmup_steps=100, checkpoint_every=50,
            seed=args.seed, tensorboard=str(Path(args.tensorboard) / "vae") if args.tensorboard else "",
        )  # fmt: skip
        if args.decoder_from and args.stage != "vae":
            raise UsageError("--decoder-from is for `tessera train vae` (a decoder fine-tune), not the recipe")
        if args.decoder_from and not Path(args.decoder_from).is_file():
            raise UsageError(f"--decoder-from {args.decoder_from} is not a file; give a VAE or generation checkpoint")
        if not 0 <= args.pan_fraction <= 1:
            raise UsageError(f"--pan-fraction {args.pan_fraction} is outside 0..1")
        if args.vae_size % preset.vae.spatial_factor or (args.vae_frames - 1) % preset.vae.temporal_factor:
            raise UsageError(
                f"--vae-size {args.vae_size} must be a multiple of {preset.vae.spatial_factor} and --vae-frames "
                f"{args.vae_frames} of the form 1 + k × {preset.vae.temporal_factor}"
            )
        if args.decoder_refine_blocks is not None:
            preset.vae.decoder_refine_blocks = args.decoder_refine_blocks
        vae_path = train_vae(
            out / "vae", preset.vae, cfg, frames=args.vae_frames, size_px=args.vae_size,
            pan_fraction=args.pan_fraction, decoder_from=args.decoder_from or "",
        )  # fmt: skip
        if args.decoder_from and checkpoint.load(args.decoder_from)[2].get("kind") == "generator":
            swapped = out / "vae" / Path(args.decoder_from).name
            replace_vae(args.decoder_from, vae_path, swapped)
            print(f"generation checkpoint with the fine-tuned decoder: {swapped}")
    if args.data and args.stage != "dit":
        raise UsageError("--data is for `tessera train dit`; train the VAE on the shapes world first")
    if args.stage in ("dit", "recipe"):
        default_vae = Path(args.data) / "vae.safetensors" if args.data else out / "vae" / "vae.safetensors"
        vae_path = Path(args.vae) if args.vae else default_vae
        if args.data and not any((Path(args.data) / "latents").glob("shard_*.safetensors")):
            raise UsageError(
                f"--data {args.data} has no latents/shard_*.safetensors; run `tessera prepare SRC --out {args.data}`"
            )
        if not vae_path.is_file():
            raise UsageError(
                f"VAE checkpoint {vae_path} not found; run `tessera train vae --out {out}` first or pass --vae"
            )
        if args.checkpoint_every < 1:
            raise UsageError(f"--checkpoint-every {args.checkpoint_every} must be at least 1")
        if args.time_limit_min < 0 or (args.time_limit_min and args.warmup < TIMING_STEPS):
            raise UsageError(
                f"--time-limit-min {args.time_limit_min} needs a positive number of minutes and --warmup of at "
                f"least {TIMING_STEPS} steps (got {args.warmup}): the step count is fixed after timing "
                f"{TIMING_STEPS} steps"
            )
        cfg = DiTTrainConfig(
            steps=args.dit_steps,
            batch=args.batch,
            lr=args.lr,
            warmup_steps=args.warmup,
            checkpoint_every=args.checkpoint_every,
            time_limit_s=args.time_limit_min * 60,
            clips=args.clips,
            seed=args.seed,
            eval_every=args.eval_every,
            eval_prompts=16,
            tensorboard=str(Path(args.tensorboard) / "dit") if args.tensorboard else "",
            init_from=args.init_from or "",
            frames=args.frames,
            shapes=_parse_shapes(args.shapes),
            bucket_frames=_latent_lengths(args.durations_s, preset),
            token_budget=args.token_budget,
            grad_accum=args.grad_accum,
            data_dir=args.data or "",
            wording=args.wording,
        )
        final = train_dit(out / "dit", preset, vae_path, cfg)
        print(f"generation checkpoint: {final}")
    return 0


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="train the VAE, the DiT, or both (the bundled model's recipe)")
    t.add_argument("stage", choices=["vae", "dit", "recipe"])
    t.add_argument("--out", default="runs/small")
    t.add_argument("--preset", default="small", choices=["tiny", "small", "base"])
    t.add_argument("--vae", default=None, help="VAE checkpoint for the dit stage (default OUT/vae/vae.safetensors)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--vae-steps", type=int, default=1200)
    t.add_argument("--vae-batch", type=int, default=6, help="VAE clips per step")
    t.add_argument("--vae-lr", type=float, default=1e-3, help="VAE peak learning rate")
    t.add_argument("--vae-size", type=int, default=128, help="side of the square VAE training clips (px)")
    t.add_argument("--vae-frames", type=int, default=9, help="frames of the VAE training clips (1 + 4k)")
    t.add_argument("--pan-fraction", type=float, default=0.25, help="share of photo pans in VAE training clips")
    t.add_argument(
        "--decoder-from", default=None,
        help="fine-tune only the decoder of this VAE or generation checkpoint; the latent space stays the same",
    )  # fmt: skip
    t.add_argument(
        "--decoder-refine-blocks",
        type=int,
        default=None,
        help="extra decoder blocks at full resolution (default: preset)",
    )
    t.add_argument("--dit-steps", type=int, default=1900)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=8e-4)
    t.add_argument("--clips", type=int, default=2048)
    t.add_argument("--eval-every", type=int, default=500)
    t.add_argument(
        "--shift", type=float, default=None, help="timestep shift for training and sampling (default: preset)"
    )
    t.add_argument(
        "--shift-ref-tokens", type=int, default=None, help="tokens at which --shift applies; it grows as sqrt(tokens)"
    )
    t.add_argument("--warmup", type=int, default=200, help="DiT warmup steps")
    t.add_argument("--frames", type=int, default=17, help="pixel frames per world clip (1 + 4k; 33 = 4 s at 8 fps)")
    t.add_argument("--shapes", default=None, help="world clip sizes WIDTHxHEIGHT,... (default 256x256)")
    t.add_argument("--durations-s", default=None, help="durations trained at, cut from the clips, e.g. 1,2,4")
    t.add_argument("--token-budget", type=int, default=0, help="video tokens per batch (default: batch x full clip)")
    t.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step")
    t.add_argument("--checkpoint-every", type=int, default=100, help="steps between crash-safe checkpoints")
    t.add_argument(
        "--time-limit-min", type=float, default=0.0,
        help="fit the DiT run into this many minutes (latent cache included): the step count is set "
        "after timing the first 50 steps, at most --dit-steps",
    )  # fmt: skip
    t.add_argument("--data", default=None, help="a `tessera prepare` dataset to train on (its VAE by default)")
    t.add_argument(
        "--tensorboard", default=None, help="also log TensorBoard scalars under this folder (pip install tensorboard)"
    )
    t.add_argument(
        "--wording", default="template", choices=["template", "rich"],
        help="world captions: the fixed template phrases, or the rich vocabularies of tessera/data/vocab",
    )  # fmt: skip
    t.add_argument("--init-from", default=None, help="start the DiT from this generation checkpoint's weights")
    t.set_defaults(func=cmd_train)
