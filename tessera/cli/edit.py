"""`tessera edit {extend,interpolate,animate,restyle,inpaint}`: a video or image + a prompt -> watermarked MP4.

Order of effects, as for `generate`: every argument, the output path, the ledger and the input
files are checked before the model loads; the prompt filter runs before any compute (exit 3);
the MP4 is written whole or not at all and only then recorded. stdout carries one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from tessera.cli.common import SEED_MAX, UsageError, check_number, check_sampling, load_pipeline, progress
from tessera.cli.generate import check_ledger
from tessera.config import MAX_GUIDANCE as GUIDANCE_MAX
from tessera.config import MAX_STEPS as STEPS_MAX
from tessera.config import MAX_VIDEO_S


def parse_box(text: str) -> tuple[int, int, int, int]:
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(
            f"--box {text!r} must be four whole numbers x0,y0,x1,y1 in output pixels, e.g. 64,64,192,192"
        ) from None
    if not (x0 < x1 and y0 < y1):
        raise UsageError(f"--box {text} needs x0 < x1 and y0 < y1 (left, top, right, bottom), e.g. 64,64,192,192")
    return x0, y0, x1, y1


def check_args(args: argparse.Namespace) -> None:
    """Every argument of `edit`, checked before any work; UsageError with the accepted range."""
    if not args.prompt.strip():
        raise UsageError(
            '--prompt is empty; describe the result, e.g. "a red circle moving left on a black background"'
        )
    check_sampling(args)
    if getattr(args, "duration_s", None) is not None:
        check_number("--duration-s", args.duration_s, 0.0, MAX_VIDEO_S, low_open=True)
    if args.task == "restyle" and not 0 < args.strength < 1:
        raise UsageError(f"--strength {args.strength} is how much to change: strictly between 0 and 1, e.g. 0.6")
    if args.task == "inpaint":
        args.box = parse_box(args.box)
        check_number("--from-s", args.from_s, 0.0, MAX_VIDEO_S)
        check_number("--to-s", args.to_s, 0.0, MAX_VIDEO_S, low_open=True)
        if args.from_s >= args.to_s:
            raise UsageError(f"--from-s {args.from_s} must be before --to-s {args.to_s}")


def inputs(args: argparse.Namespace) -> list[str]:
    return [args.a, args.b] if args.task == "interpolate" else [args.input]


def check_inputs(args: argparse.Namespace) -> None:
    """Each input file read once (at the default frame rate) before the model loads: InputError if unusable."""
    from tessera.config import ModelConfig
    from tessera.edit import read_media

    for path in inputs(args):
        read_media(path, fps=ModelConfig().fps)


def run_task(pipe, args: argparse.Namespace, **settings):
    from tessera import edit

    size = dict(width=args.width, height=args.height)
    if args.task == "extend":
        return edit.extend(
            pipe, args.input, args.prompt, args.duration_s, args.context_s, args.backwards, **size, **settings
        )
    if args.task == "interpolate":
        return edit.interpolate(pipe, args.a, args.b, args.prompt, args.duration_s, **size, **settings)
    if args.task == "animate":
        return edit.animate(pipe, args.input, args.prompt, args.duration_s, **size, **settings)
    if args.task == "restyle":
        return edit.restyle(pipe, args.input, args.prompt, args.strength, **size, **settings)
    return edit.inpaint(pipe, args.input, args.prompt, args.box, args.from_s, args.to_s, **size, **settings)


def cmd_edit(args: argparse.Namespace) -> int:
    from tessera.export import check_output_path, probe
    from tessera.safety.watermarker import Ledger

    check_args(args)
    check_output_path(args.output)
    check_ledger()
    check_inputs(args)
    t0 = time.time()
    pipe = load_pipeline(args.checkpoint, ledger=Ledger(store_prompt=args.store_prompt))
    settings = dict(
        negative_prompt=args.negative_prompt, num_inference_steps=args.steps, guidance_scale=args.guidance,
        seed=args.seed, enhance=not args.no_enhance,
    )  # fmt: skip
    req = pipe.check_request(args.prompt, **settings)  # the prompt filter refuses before any compute (exit 3)
    enhanced = req.enhanced[0]
    if enhanced is not None:
        print(f"prompt as the model reads it: {enhanced.text}", file=sys.stderr)
    handler = logging.StreamHandler(sys.stderr)  # tessera.edit says how the input was fitted, in one line
    logger = logging.getLogger("tessera.edit")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        out = run_task(
            pipe, args, output_type="mp4", output_path=args.output, scheduler=args.scheduler,
            callback=_progress_later(args.task), **settings,
        )  # fmt: skip
    finally:
        logger.removeHandler(handler)
    info = probe(out.path)
    result = {
        "task": args.task,
        "output": str(out.path),
        "generation_id": out.generation_id,
        "prompt": out.prompt,
        "enhanced_prompt": out.enhanced_prompt,  # null with --no-enhance
        "unmapped_words": enhanced.unknown if enhanced is not None else [],
        "width": info["width"],
        "height": info["height"],
        "frames": info["frames"],
        "fps": out.fps,
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(result))
    print(f"wrote {out.path}", file=sys.stderr)
    return 0


def _progress_later(desc: str):
    """A progress bar made at the first step, so the line saying how the input was fitted is not inside it."""
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        bar = bar or progress(desc)
        bar(done, total)

    return update


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", required=True, help="what the result shows")
    p.add_argument("-o", "--output", "--out", dest="output", default="edit.mp4")
    p.add_argument("--seed", type=int, default=0, help=f"0–{SEED_MAX}")
    p.add_argument("--steps", type=int, default=None, help=f"denoising steps, 1–{STEPS_MAX} (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help=f"0–{GUIDANCE_MAX:g} (default: the model's)")
    p.add_argument("--width", type=int, default=None, help="pixels (default: the input's aspect, a trained shape)")
    p.add_argument("--height", type=int, default=None, help="pixels (default: the input's aspect, a trained shape)")
    p.add_argument("--checkpoint", default=None, help="generation checkpoint (.safetensors); default: bundled")
    p.add_argument("--negative-prompt", default=None, help="what the result should not show")
    p.add_argument("--store-prompt", action="store_true", help="keep the prompt in the ledger (default: its hash only)")
    p.add_argument("--no-enhance", action="store_true", help="give the prompt to the text encoder as typed")
    p.add_argument("--scheduler", default=None, help="solver: euler (default) or another registered scheduler")
    p.set_defaults(func=cmd_edit)


def add_parser(sub) -> None:
    e = sub.add_parser("edit", help="extend, interpolate, animate, restyle or inpaint a video or image")
    tasks = e.add_subparsers(dest="task", required=True)
    p = tasks.add_parser("extend", help="new frames after (or --backwards: before) a video")
    p.add_argument("input", help="video (or image) to extend")
    p.add_argument(
        "--duration-s", type=float, default=2.0, help=f"seconds of new frames (default 2, up to {MAX_VIDEO_S:g})"
    )
    p.add_argument("--context-s", type=float, default=1.0, help="seconds of the input each chunk sees (default 1)")
    p.add_argument("--backwards", action="store_true", help="make what comes before the input")
    _common(p)
    p = tasks.add_parser("interpolate", help="a clip from the end of A to the start of B")
    p.add_argument("a", help="video or image the clip starts from")
    p.add_argument("b", help="video or image the clip ends at")
    p.add_argument("--duration-s", type=float, default=2.0, help="seconds (default 2, up to the model's 4)")
    _common(p)
    p = tasks.add_parser("animate", help="a clip whose first frame is an image")
    p.add_argument("input", help="image (a video: its first frame)")
    p.add_argument("--duration-s", type=float, default=2.0, help=f"seconds (default 2, up to {MAX_VIDEO_S:g})")
    _common(p)
    p = tasks.add_parser("restyle", help="re-render a video under a new prompt")
    p.add_argument("input", help="video of up to the model's 4 s")
    p.add_argument("--strength", type=float, default=0.6, help="how much to change, strictly between 0 and 1")
    _common(p)
    p = tasks.add_parser("inpaint", help="regenerate a box over a time range, keep the rest")
    p.add_argument("input", help="video of up to the model's 4 s")
    p.add_argument("--box", required=True, help="x0,y0,x1,y1 in pixels of the output")
    p.add_argument("--from-s", type=float, required=True, help="start of the time range, seconds")
    p.add_argument("--to-s", type=float, required=True, help="end of the time range, seconds")
    _common(p)
