"""`tessera generate`: prompt -> watermarked MP4."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

from tessera.cli.common import UsageError, progress


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
    frames = pipe.generate([req], progress=progress("denoise"))[0]
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


def add_parser(sub) -> None:
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
