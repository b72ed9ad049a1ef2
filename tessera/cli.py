"""The `tessera` command: generate | train | eval | verify | prepare.

Every user error (bad prompt, size, duration, checkpoint, output path) prints one line
saying what was wrong and what to do, and exits with code 2; no tracebacks.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import uuid
from pathlib import Path

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _progress(desc: str):
    from tqdm import tqdm

    bar = tqdm(total=None, desc=desc, file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


# ----------------------------------------------------------------------------- generate


def cmd_generate(args: argparse.Namespace) -> int:
    from tessera.checkpoint import CheckpointError
    from tessera.export import check_output_path, write_mp4
    from tessera.pipeline import GenerateRequest, TesseraPipeline

    prompt = args.prompt.strip()
    if not prompt:
        raise UsageError(
            'the prompt is empty; describe the video, e.g. "a red circle moving left on a black background"'
        )
    try:
        out = check_output_path(args.output)
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from e
    t0 = time.time()
    try:
        pipe = TesseraPipeline.from_checkpoint(args.checkpoint)
    except CheckpointError as e:
        raise UsageError(str(e)) from e
    req = GenerateRequest(
        prompt=prompt,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        width_px=args.width,
        height_px=args.height,
        duration_s=args.duration_s,
        fps=args.fps,
    )
    try:
        frames_n, h, w, fps = pipe.resolve(req)
        if not 1 <= args.steps <= 1000:
            raise ValueError(f"--steps {args.steps} is outside 1–1000")
    except ValueError as e:
        raise UsageError(str(e)) from e
    print(f"generating {w}×{h}, {frames_n} frames at {fps} fps, {args.steps} steps", file=sys.stderr)
    frames = pipe.generate([req], progress=_progress("denoise"))[0]
    generation_id = uuid.uuid4().hex
    frames, meta = _mark(frames, pipe, req, generation_id, fps)
    write_mp4(frames, out, fps, metadata=meta)
    print(json.dumps({"output": str(out), "generation_id": generation_id, "seconds": round(time.time() - t0, 1)}))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _mark(frames, pipe, req, generation_id: str, fps: int):
    """Hide the watermark (model id + generation id) in the frames and record the fingerprint."""
    from tessera.safety import fingerprint, watermark

    frames = watermark.embed(frames, watermark.make_payload(pipe.name, generation_id))
    record = fingerprint.GenerationRecord.from_frames(
        frames,
        generation_id=generation_id,
        model_id=pipe.name,
        prompt=req.prompt,
        seed=req.seed,
        steps=req.steps,
        guidance=req.guidance,
        fps=fps,
    )
    fingerprint.FingerprintRegistry().add(record)
    return frames, {"comment": f"tessera model={pipe.name} generation={generation_id}"}


# ----------------------------------------------------------------------------- verify


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when a watermark is found, 1 when none is, 2 on bad input."""
    from tessera.export import read_video
    from tessera.safety import fingerprint, watermark

    try:
        frames, _ = read_video(args.video)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from e
    payload, confidence = watermark.extract(frames)
    registry = fingerprint.FingerprintRegistry()
    result = {
        "video": str(args.video),
        "watermark": payload.hex() if payload else None,
        "confidence": round(confidence, 3),
    }
    record = registry.find_payload(payload) if payload else None
    if record is None:
        match = registry.nearest(frames)
        if match is not None:
            record, result["fingerprint_distance"] = match[0], round(match[1], 3)
    if record is not None:
        result["generation"] = {
            "generation_id": record.generation_id,
            "model_id": record.model_id,
            "prompt": record.prompt,
        }
    print(json.dumps(result))
    return 0 if payload is not None else 1


# ----------------------------------------------------------------------------- train


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
        )
        final = train_dit(out / "dit", preset, vae_path, cfg)
        print(f"generation checkpoint: {final}")
    return 0


# ----------------------------------------------------------------------------- prepare


def cmd_prepare(args: argparse.Namespace) -> int:
    """Videos -> cleaned, captioned, encoded dataset; prints the summary table and JSON."""
    from tessera.checkpoint import CheckpointError
    from tessera.data.filters import FilterConfig
    from tessera.data.ingest import ShotConfig, SourceError
    from tessera.data.prepare import PrepareConfig, prepare, summary_table

    if args.workers < 1:
        raise UsageError(f"--workers {args.workers} must be at least 1")
    for name in ("captioner_model", "unsafe_model"):
        folder = getattr(args, name)
        if folder and not Path(folder).is_dir():
            raise UsageError(
                f"--{name.replace('_', '-')} {folder} is not a folder; pass a local transformers model folder"
            )
    cfg = PrepareConfig(
        shots=ShotConfig(threshold=args.shot_threshold, min_duration_s=args.min_s, max_duration_s=args.max_s),
        filters=FilterConfig(
            max_shake_pct=args.max_shake_pct,
            max_blur=args.max_blur,
            max_blockiness=args.max_blockiness,
            min_bits_per_pixel=args.min_bits_per_pixel,
            min_highlight_luma=args.min_highlight_luma,
            min_motion_pct=args.min_motion_pct,
            unsafe_model=args.unsafe_model or "",
            unsafe_labels=tuple(x.strip() for x in args.unsafe_labels.split(",") if x.strip()),
            max_unsafe=args.max_unsafe,
        ),
        captioner_model=args.captioner_model or "",
        encode=not args.no_encode,
        checkpoint=args.checkpoint or "",
        shapes=tuple(x.strip() for x in args.shapes.split(",") if x.strip()),
        frames=args.frames,
        fps=args.fps,
        clips_per_shard=args.clips_per_shard,
    )
    t0 = time.time()
    try:
        summary = prepare(args.src, args.out, cfg, workers=args.workers, progress=not args.quiet)
    except (SourceError, CheckpointError, ValueError) as e:
        raise UsageError(str(e)) from e
    summary["seconds"] = round(time.time() - t0, 1)
    print(summary_table(summary), file=sys.stderr)
    print(json.dumps(summary))
    return 0


# ----------------------------------------------------------------------------- eval


def cmd_eval(args: argparse.Namespace) -> int:
    from tessera.checkpoint import CheckpointError
    from tessera.eval import adherence, eval_cases
    from tessera.pipeline import GenerateRequest, TesseraPipeline

    try:
        pipe = TesseraPipeline.from_checkpoint(args.checkpoint)
    except CheckpointError as e:
        raise UsageError(str(e)) from e
    cases = eval_cases(args.prompts, seed=args.seed)

    def gen(prompts, seeds):
        reqs = [
            GenerateRequest(
                p,
                seed=s,
                steps=args.steps,
                guidance=args.guidance,
                width_px=args.width,
                height_px=args.height,
                duration_s=args.duration_s,
            )
            for p, s in zip(prompts, seeds)
        ]
        return pipe.generate(reqs)

    t0 = time.time()
    result, analyses = adherence(gen, cases, batch=args.batch, progress=_progress("eval"))
    result["seconds"] = round(time.time() - t0, 1)
    result["checkpoint"] = str(args.checkpoint or "bundled")
    result["size"] = f"{args.width or pipe.cfg.width_px}x{args.height or pipe.cfg.height_px}"
    result["duration_s"] = args.duration_s or pipe.cfg.duration_s
    print(json.dumps(result, indent=2))
    if args.json:
        rows = [
            {"prompt": c.prompt, "held_out": c.held_out, "judged": [a.colour, a.shape, a.motion, a.background]}
            for c, a in zip(cases, analyses)
        ]
        Path(args.json).write_text(json.dumps({"summary": result, "cases": rows}, indent=1))
    return 0


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tessera", description="Text-to-video with spacetime patches.")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="prompt -> MP4 with the bundled (or a given) model")
    g.add_argument("prompt")
    g.add_argument("-o", "--output", default="tessera.mp4")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--steps", type=int, default=25)
    g.add_argument("--guidance", type=float, default=4.0)
    g.add_argument("--width", type=int, default=None, help="pixels (default: the model's, 256)")
    g.add_argument("--height", type=int, default=None, help="pixels (default: the model's, 256)")
    g.add_argument("--duration-s", type=float, default=None, help="seconds (default 2)")
    g.add_argument("--fps", type=int, default=None, help="frames per second (default 8)")
    g.add_argument("--checkpoint", default=None, help="generation checkpoint (.safetensors); default: bundled")
    g.set_defaults(func=cmd_generate)

    v = sub.add_parser("verify", help="read the invisible watermark of a video and look up its generation")
    v.add_argument("video")
    v.set_defaults(func=cmd_verify)

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
    t.add_argument("--init-from", default=None, help="start the DiT from this generation checkpoint's weights")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("prepare", help="videos -> probed, split, filtered, captioned, encoded training dataset")
    pr.add_argument("src", help="a folder, a glob (quoted) or a list file of videos (mp4, mov, mkv, webm, avi)")
    pr.add_argument("--out", required=True, help="dataset folder; rerun with the same folder to resume")
    pr.add_argument("--workers", type=int, default=1, help="processes per stage")
    pr.add_argument("--min-s", type=float, default=2.0, help="clips shorter than this many seconds are rejected")
    pr.add_argument("--max-s", type=float, default=8.0, help="longer shots are cut into clips of at most this")
    pr.add_argument("--shot-threshold", type=float, default=27.0, help="PySceneDetect ContentDetector threshold")
    pr.add_argument("--max-shake-pct", type=float, default=1.2, help="camera jitter, %% of the short side")
    pr.add_argument("--max-blur", type=float, default=0.55, help="no-reference blur 0..1 (Crete re-blur ratio)")
    pr.add_argument("--max-blockiness", type=float, default=1.2, help="8-px block-edge steps / other steps")
    pr.add_argument("--min-bits-per-pixel", type=float, default=0.002, help="source bit rate per pixel per frame")
    pr.add_argument("--min-highlight-luma", type=float, default=60.0, help="99th percentile luma, 0..255")
    pr.add_argument("--min-motion-pct", type=float, default=0.2, help="frame difference, %% of the luma range")
    pr.add_argument("--unsafe-model", default=None, help="local image-classification folder; default: no unsafe filter")
    pr.add_argument(
        "--unsafe-labels", default="nsfw,unsafe,porn,hentai,sexy,explicit", help="the model's unsafe labels"
    )
    pr.add_argument("--max-unsafe", type=float, default=0.5, help="reject above this unsafe probability")
    pr.add_argument("--captioner-model", default=None, help="local image-to-text folder (GIT, BLIP); default: rules")
    pr.add_argument("--no-encode", action="store_true", help="stop after captions: no latents, no shards")
    pr.add_argument("--checkpoint", default=None, help="generation or VAE checkpoint for the latents; default: bundled")
    pr.add_argument("--shapes", default="256x256,448x256,256x448", help="training shapes WIDTHxHEIGHT, comma-separated")
    pr.add_argument("--frames", type=int, default=17, help="frames per clip, 1 + 4k")
    pr.add_argument("--fps", type=float, default=8.0, help="frame rate the clip frames are sampled at")
    pr.add_argument("--clips-per-shard", type=int, default=256)
    pr.add_argument("--quiet", action="store_true", help="no progress bars")
    pr.set_defaults(func=cmd_prepare)

    e = sub.add_parser("eval", help="prompt adherence measured from the decoded frames")
    e.add_argument("--checkpoint", default=None)
    e.add_argument("--prompts", type=int, default=120)
    e.add_argument("--seed", type=int, default=1234)
    e.add_argument("--steps", type=int, default=25)
    e.add_argument("--guidance", type=float, default=4.0)
    e.add_argument("--width", type=int, default=None)
    e.add_argument("--height", type=int, default=None)
    e.add_argument("--duration-s", type=float, default=None)
    e.add_argument("--batch", type=int, default=8)
    e.add_argument("--json", default=None, help="also write per-prompt results here")
    e.set_defaults(func=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tessera: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
