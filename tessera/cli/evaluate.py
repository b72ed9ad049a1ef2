"""`tessera eval`: prompt adherence judged from the decoded frames."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tessera.cli.common import UsageError, progress


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
    result, analyses = adherence(gen, cases, batch=args.batch, progress=progress("eval"))
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


def add_parser(sub) -> None:
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
