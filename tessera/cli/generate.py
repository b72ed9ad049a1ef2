"""`tessera generate`: prompt -> watermarked MP4."""

from __future__ import annotations

import argparse
import json
import sys
import time

from tessera.cli.common import progress

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
    from tessera.pipeline import TesseraPipeline
    from tessera.safety.prompt_filter import PromptFilter

    PromptFilter.default().enforce(args.prompt)  # refuses before any compute: UnsafePromptError, exit code 3
    t0 = time.time()
    if args.fast:
        apply_fast(args)
    pipe = TesseraPipeline.from_single_file(args.checkpoint)
    if args.int8:
        pipe.quantize_int8()
    kwargs = dict(
        negative_prompt=args.negative_prompt, num_inference_steps=args.steps, guidance_scale=args.guidance,
        width=args.width, height=args.height, duration_s=args.duration_s, fps=args.fps, seed=args.seed,
        output_type="mp4", output_path=args.output, enhance=not args.no_enhance,
    )  # fmt: skip
    req = pipe.check_request(args.prompt, **kwargs)  # every input checked before any compute
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
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, 25)")
    g.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the model's, 4)")
    g.add_argument("--width", type=int, default=None, help="pixels (default: the model's, 256)")
    g.add_argument("--height", type=int, default=None, help="pixels (default: the model's, 256)")
    g.add_argument("--duration-s", type=float, default=None, help="seconds (default 2)")
    g.add_argument("--fps", type=int, default=None, help="frames per second (default 8)")
    g.add_argument("--checkpoint", default=None, help="generation checkpoint (.safetensors); default: bundled")
    g.add_argument(
        "--negative-prompt", default=None, help="what the video should not show (replaces the empty prompt of guidance)"
    )
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
