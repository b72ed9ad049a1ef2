"""`tessera generate`: prompt -> watermarked MP4."""

from __future__ import annotations

import argparse
import json
import sys
import time

from tessera.cli.common import progress


def cmd_generate(args: argparse.Namespace) -> int:
    from tessera.pipeline import TesseraPipeline

    t0 = time.time()
    pipe = TesseraPipeline.from_single_file(args.checkpoint)
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
    g.add_argument("--steps", type=int, default=25)
    g.add_argument("--guidance", type=float, default=4.0)
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
    g.set_defaults(func=cmd_generate)
