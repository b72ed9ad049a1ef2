"""`tessera generate`: prompt -> watermarked MP4.

Order of effects: every argument, the output path and the ledger are checked before any work
(before the model loads); the pipeline then checks the request against the model (sizes,
duration) before any compute, generates, writes the MP4 whole or not at all, and only then
appends its fingerprint record.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tessera.cli.common import SEED_MAX, UsageError, check_int, check_number, check_side, load_pipeline, progress

GUIDANCE_MAX = 50.0
STEPS_MAX = 1000


def check_args(args: argparse.Namespace) -> None:
    """Every argument of `generate`, checked before any work; UsageError with the accepted range."""
    if not args.prompt.strip():
        raise UsageError(
            'the prompt is empty; describe the video, e.g. "a red circle moving left on a black background"'
        )
    check_int("--seed", args.seed, 0, SEED_MAX, "seeds are 64-bit")
    check_int("--steps", args.steps, 1, STEPS_MAX, "25 is the default")
    check_number("--guidance", args.guidance, 0.0, GUIDANCE_MAX, hint="4 is the default, 1 turns guidance off")
    check_side("--width", args.width)
    check_side("--height", args.height)
    check_int("--fps", args.fps, 1, 60)
    check_number("--duration-s", args.duration_s, 0.0, 3600.0, low_open=True)
    if args.checkpoint is not None and not args.checkpoint:
        raise UsageError("--checkpoint is empty; pass a .safetensors generation checkpoint or leave it out")


def check_ledger() -> None:
    """UsageError when the fingerprint ledger could not be appended to; checked before any work, changes nothing."""
    from tessera.safety.fingerprint import default_registry_path

    path = default_registry_path()
    try:
        existing = next(p for p in (path, *path.parents) if p.exists())
        ok = existing.is_file() if existing == path else existing.is_dir()
        ok = ok and os.access(existing, os.W_OK | (0 if existing == path else os.X_OK))
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise UsageError(f"the fingerprint ledger {path} cannot be written; set TESSERA_HOME to a writable folder")


def cmd_generate(args: argparse.Namespace) -> int:
    from tessera.export import check_output_path

    check_args(args)
    check_output_path(args.output)
    check_ledger()
    t0 = time.time()
    pipe = load_pipeline(args.checkpoint)
    kwargs = dict(
        negative_prompt=args.negative_prompt, num_inference_steps=args.steps, guidance_scale=args.guidance,
        width=args.width, height=args.height, duration_s=args.duration_s, fps=args.fps, seed=args.seed,
        output_type="mp4", output_path=args.output,
    )  # fmt: skip
    req = pipe.check_request(args.prompt, **kwargs)  # every input checked against the model before any compute
    print(
        f"generating {req.width_px}×{req.height_px}, {req.frames} frames at {req.fps} fps, {req.steps} steps",
        file=sys.stderr,
    )
    out = pipe(args.prompt, scheduler=args.scheduler, callback=progress("denoise"), **kwargs)
    print(
        json.dumps({"output": str(out.path), "generation_id": out.generation_id, "seconds": round(time.time() - t0, 1)})
    )
    print(f"wrote {out.path}", file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    g = sub.add_parser("generate", help="prompt -> MP4 with the bundled (or a given) model")
    g.add_argument("prompt")
    g.add_argument("-o", "--output", default="tessera.mp4")
    g.add_argument("--seed", type=int, default=0, help=f"0–{SEED_MAX}")
    g.add_argument("--steps", type=int, default=25, help=f"denoising steps, 1–{STEPS_MAX}")
    g.add_argument("--guidance", type=float, default=4.0, help=f"classifier-free guidance, 0–{GUIDANCE_MAX:g}")
    g.add_argument("--width", type=int, default=None, help="pixels (default: the model's, 256)")
    g.add_argument("--height", type=int, default=None, help="pixels (default: the model's, 256)")
    g.add_argument("--duration-s", type=float, default=None, help="seconds (default 2)")
    g.add_argument("--fps", type=int, default=None, help="frames per second, 1–60 (default 8)")
    g.add_argument("--checkpoint", default=None, help="generation checkpoint (.safetensors); default: bundled")
    g.add_argument(
        "--negative-prompt", default=None, help="what the video should not show (replaces the empty prompt of guidance)"
    )
    g.add_argument("--scheduler", default=None, help="solver: euler (default) or another registered scheduler")
    g.set_defaults(func=cmd_generate)
