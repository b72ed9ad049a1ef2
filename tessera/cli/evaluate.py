"""`tessera eval`: prompt adherence judged from the decoded frames."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tessera.cli.common import (
    SEED_MAX,
    UsageError,
    check_int,
    check_new_file,
    check_number,
    check_side,
    load_pipeline,
    progress,
)
from tessera.cli.generate import GUIDANCE_MAX, STEPS_MAX


def check_args(args: argparse.Namespace) -> None:
    """Every argument of `eval`, checked before any work; UsageError with the accepted range."""
    check_int("--prompts", args.prompts, 1, 100_000)
    check_int("--seed", args.seed, 0, SEED_MAX)
    if args.steps is not None:
        check_int("--steps", args.steps, 1, STEPS_MAX)
    if args.guidance is not None:
        check_number("--guidance", args.guidance, 0.0, GUIDANCE_MAX)
    check_side("--width", args.width)
    check_side("--height", args.height)
    check_number("--duration-s", args.duration_s, 0.0, 3600.0, low_open=True)
    check_int("--batch", args.batch, 1, 1024)
    check_new_file("--json", args.json)


def cmd_eval(args: argparse.Namespace) -> int:
    import tempfile

    from tessera.eval import adherence, eval_cases
    from tessera.safety.watermarker import Ledger

    check_args(args)
    scratch = tempfile.TemporaryDirectory()  # judged videos are marked like any other, but not kept in the ledger
    pipe = load_pipeline(args.checkpoint, ledger=Ledger(f"{scratch.name}/ledger.sqlite3"))
    if args.int8:
        pipe.quantize_int8()
    try:  # sizes and duration against the model (multiples of its patch, its longest clip)
        pipe.resolve_size(args.width, args.height, args.duration_s, None)
    except ValueError as e:
        raise UsageError(str(e)) from e
    cases = eval_cases(args.prompts, seed=args.seed)
    settings = dict(
        num_inference_steps=args.steps, guidance_scale=args.guidance, width=args.width, height=args.height,
        duration_s=args.duration_s, scheduler=args.scheduler,
    )  # fmt: skip

    def gen(prompts, seeds):
        return [out.frames for out in pipe(list(prompts), seed=list(seeds), **settings)]

    t0 = time.time()
    result, analyses = adherence(gen, cases, batch=args.batch, progress=progress("eval"))
    result["seconds"] = round(time.time() - t0, 1)
    result["checkpoint"] = str(args.checkpoint or "bundled")
    result["size"] = f"{args.width or pipe.config.width_px}x{args.height or pipe.config.height_px}"
    result["duration_s"] = args.duration_s or pipe.config.duration_s
    result["scheduler"] = args.scheduler or pipe.scheduler.name
    result["steps"] = args.steps or pipe.sampling["steps"]
    result["int8"] = args.int8
    print(json.dumps(result, indent=2))
    if args.json:
        rows = [
            {"prompt": c.prompt, "held_out": c.held_out, "judged": [a.colour, a.shape, a.motion, a.background]}
            for c, a in zip(cases, analyses)
        ]
        Path(args.json).write_text(json.dumps({"summary": result, "cases": rows}, indent=1))
    return 0


def add_parser(sub) -> None:
    e = sub.add_parser("eval", help="prompt adherence measured from the decoded frames")
    e.add_argument("--checkpoint", default=None)
    e.add_argument("--prompts", type=int, default=120)
    e.add_argument("--seed", type=int, default=1234)
    e.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, 25)")
    e.add_argument("--guidance", type=float, default=None, help="guidance (default: the model's, 4)")
    e.add_argument("--width", type=int, default=None)
    e.add_argument("--height", type=int, default=None)
    e.add_argument("--duration-s", type=float, default=None)
    e.add_argument("--batch", type=int, default=8)
    e.add_argument("--scheduler", default=None, help="solver (default: the model's, euler)")
    e.add_argument("--int8", action="store_true", help="int8 weights for the DiT's linear layers")
    e.add_argument("--json", default=None, help="also write per-prompt results here")
    e.set_defaults(func=cmd_eval)
