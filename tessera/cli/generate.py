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

from tessera.cli.common import SEED_MAX, UsageError, check_int, check_number, check_sampling, load_pipeline, progress
from tessera.config import MAX_FPS, MAX_VIDEO_S
from tessera.config import MAX_GUIDANCE as GUIDANCE_MAX
from tessera.config import MAX_STEPS as STEPS_MAX


def check_args(args: argparse.Namespace) -> None:
    """Every argument of `generate`, checked before any work; UsageError with the accepted range."""
    if not args.prompt.strip():
        raise UsageError(
            'the prompt is empty; describe the video, e.g. "a red circle moving left on a black background"'
        )
    check_sampling(args)
    check_int("--fps", args.fps, 1, MAX_FPS)
    check_number(
        "--duration-s", args.duration_s, 0.0, MAX_VIDEO_S, low_open=True, hint="above 4 s it is made in chunks"
    )


def check_ledger() -> None:
    """UsageError when the ledger could not be written; checked before any work, changes nothing."""
    from tessera.safety.keys import tessera_home
    from tessera.safety.ledger import LEDGER_FILE

    path = tessera_home() / LEDGER_FILE
    try:
        existing = next(p for p in (path, *path.parents) if p.exists())
        ok = existing.is_file() if existing == path else existing.is_dir()
        ok = ok and os.access(existing, os.W_OK | (0 if existing == path else os.X_OK))
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise UsageError(f"the ledger {path} cannot be written; set TESSERA_HOME to a writable folder")


FAST_SCHEDULER, FAST_STEPS = "dpm++2m", 12  # --fast without a bundled student: a second-order solver, fewer steps


def apply_fast(args: argparse.Namespace) -> None:
    """--fast: the bundled few-step student when it ships (it brings its own sampling), else fewer solver steps."""
    from tessera.pipeline import bundled_student

    student = bundled_student()
    if args.checkpoint is None and student.is_file():
        args.checkpoint = str(student)
    else:
        args.scheduler = args.scheduler or FAST_SCHEDULER
        args.steps = args.steps or FAST_STEPS


def cmd_generate(args: argparse.Namespace) -> int:
    from tessera.export import check_output_path
    from tessera.safety.watermarker import Ledger

    check_args(args)
    check_output_path(args.output)
    check_ledger()
    t0 = time.time()
    if args.fast:
        apply_fast(args)
    # the pipeline's prompt filter refuses before any compute (UnsafePromptError, exit code 3)
    pipe = load_pipeline(args.checkpoint, ledger=Ledger(store_prompt=args.store_prompt))
    if args.int8:
        pipe.quantize_int8()
    kwargs = dict(
        negative_prompt=args.negative_prompt, num_inference_steps=args.steps, guidance_scale=args.guidance,
        width=args.width, height=args.height, duration_s=args.duration_s, fps=args.fps, seed=args.seed,
        output_type="mp4", output_path=args.output, enhance=not args.no_enhance,
    )  # fmt: skip
    req = pipe.check_request(args.prompt, **kwargs)  # every input checked against the model before any compute
    print(
        f"generating {req.width_px}×{req.height_px}, {req.frames} frames at {req.fps} fps, {req.steps} steps",
        file=sys.stderr,
    )
    out = pipe(args.prompt, scheduler=args.scheduler, callback=progress("denoise"), **kwargs)
    enhanced = req.enhanced[0]
    if enhanced is not None:
        print(f"prompt as the model reads it: {enhanced.text}", file=sys.stderr)
    result = {
        "output": str(out.path),
        "generation_id": out.generation_id,
        "prompt": out.prompt,
        "enhanced_prompt": out.enhanced_prompt,  # null with --no-enhance
        "unmapped_words": enhanced.unknown if enhanced is not None else [],
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(result))
    print(f"wrote {out.path}", file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    g = sub.add_parser("generate", help="prompt -> MP4 with the bundled (or a given) model")
    g.add_argument("prompt")
    g.add_argument("-o", "--output", default="tessera.mp4")
    g.add_argument("--seed", type=int, default=0, help=f"0–{SEED_MAX}")
    g.add_argument("--steps", type=int, default=None, help=f"denoising steps, 1–{STEPS_MAX} (default: the model's, 25)")
    g.add_argument(
        "--guidance",
        type=float,
        default=None,
        help=f"classifier-free guidance, 0–{GUIDANCE_MAX:g} (default: the model's, 4)",
    )
    g.add_argument("--width", type=int, default=None, help="pixels (default: the model's, 256)")
    g.add_argument("--height", type=int, default=None, help="pixels (default: the model's, 256)")
    g.add_argument(
        "--duration-s", type=float, default=None,
        help=f"seconds (default 2); above the model's 4 s made in chunks, up to {MAX_VIDEO_S:g}",
    )  # fmt: skip
    g.add_argument("--fps", type=int, default=None, help="frames per second, 1–60 (default 8)")
    g.add_argument("--checkpoint", default=None, help="generation checkpoint (.safetensors); default: bundled")
    g.add_argument(
        "--negative-prompt", default=None, help="what the video should not show (replaces the empty prompt of guidance)"
    )
    g.add_argument("--store-prompt", action="store_true", help="keep the prompt in the ledger (default: its hash only)")
    g.add_argument(
        "--no-enhance", action="store_true", help="give the prompt to the text encoder as typed (no rewriting)"
    )
    g.add_argument("--scheduler", default=None, help="solver: euler (default) or another registered scheduler")
    g.add_argument("--int8", action="store_true", help="int8 weights for the DiT's linear layers (less memory)")
    g.add_argument(
        "--fast", action="store_true",
        help=f"the few-step student if one ships, else {FAST_SCHEDULER} at {FAST_STEPS} steps",
    )  # fmt: skip
    g.set_defaults(func=cmd_generate)
