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
from tessera.eval import EVAL_SETS


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

    from tessera.eval import adherence, eval_cases, paraphrase_cases
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
    if args.set == "two-object":
        return cmd_eval_two_object(args, pipe)
    cases = paraphrase_cases(args.prompts) if args.set == "paraphrase" else eval_cases(args.prompts, seed=args.seed)
    settings = dict(
        num_inference_steps=args.steps, guidance_scale=args.guidance, width=args.width, height=args.height,
        duration_s=args.duration_s, scheduler=args.scheduler, enhance=not args.no_enhance,
    )  # fmt: skip

    def gen(prompts, seeds):
        return [out.frames for out in pipe(list(prompts), seed=list(seeds), **settings)]

    t0 = time.time()

    def partial(scores: dict, done: int) -> None:  # a long run can be read before it ends
        if args.json:
            Path(args.json + ".partial").write_text(json.dumps({"done": done, "of": len(cases), **scores}, indent=1))

    result, analyses = adherence(gen, cases, batch=args.batch, progress=progress("eval"), partial=partial)
    result["seconds"] = round(time.time() - t0, 1)
    result["checkpoint"] = str(args.checkpoint or "bundled")
    result["size"] = f"{args.width or pipe.config.width_px}x{args.height or pipe.config.height_px}"
    result["duration_s"] = args.duration_s or pipe.config.duration_s
    result["scheduler"] = args.scheduler or pipe.scheduler.name
    result["steps"] = args.steps or pipe.sampling["steps"]
    result["int8"] = args.int8
    result["set"], result["enhance"] = args.set, not args.no_enhance
    print(json.dumps(result, indent=2))
    if args.json:
        rows = [
            {
                "prompt": c.prompt,
                "style": c.style,
                "held_out": c.held_out,
                "intended": [c.colour, c.shape, c.motion, c.background],
                "judged": [a.colour, a.shape, a.motion, a.background],
            }
            for c, a in zip(cases, analyses)
        ]
        Path(args.json).write_text(json.dumps({"summary": result, "cases": rows}, indent=1))
        Path(args.json + ".partial").unlink(missing_ok=True)  # the whole result is in place
    return 0


def cmd_eval_two_object(args: argparse.Namespace, pipe) -> int:
    """Two objects per prompt, each judged on the pixels of its colour.

    Scores: both colours visible in at least half the frames; background; each object's shape and motion.
    Objects overlap and hide each other, so the judge is also run on the world's own renders of the
    same prompts ("judge_on_ground_truth"): the ceiling for shape and motion.
    """
    from tessera.eval import read_eval_set

    rows = read_eval_set("two_object")[: args.prompts]
    settings = dict(
        num_inference_steps=args.steps, guidance_scale=args.guidance, width=args.width, height=args.height,
        duration_s=args.duration_s, scheduler=args.scheduler, enhance=not args.no_enhance,
    )  # fmt: skip
    t0, judged, bar = time.time(), [], progress("eval")
    for i in range(0, len(rows), args.batch):
        chunk = rows[i : i + args.batch]
        outs = pipe([r["prompt"] for r in chunk], seed=list(range(i, i + len(chunk))), **settings)
        judged += [_judge_two(r, out.frames) for r, out in zip(chunk, outs)]
        bar(len(judged), len(rows))
    shape = outs[0].frames.shape  # (T, H, W, 3)
    truth = [_judge_two(r, _render_two(r, i, shape)) for i, r in enumerate(rows)]
    result = {
        "n": len(rows),
        **_two_scores(judged),
        "judge_on_ground_truth": _two_scores(truth),
        "seconds": round(time.time() - t0, 1),
        "set": "two-object",
        "enhance": not args.no_enhance,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": result, "judged": judged}, indent=1))
    return 0


def _judge_two(row: dict, frames) -> dict:
    from tessera.eval import analyze_objects

    found = analyze_objects(frames, [o["colour"] for o in row["objects"]])
    return {
        "visible": [a.shape is not None for a in found],
        "shape_motion": [(a.shape, a.motion) == (o["shape"], o["motion"]) for o, a in zip(row["objects"], found)],
        "background": found[0].background == row["background"],
    }


def _render_two(row: dict, seed: int, shape: tuple) -> object:
    import numpy as np

    from tessera.data.world.scenes import ClipSpec, random_object, render

    t, h, w, _ = shape
    rng = np.random.default_rng(seed)
    objs = tuple(random_object(rng, o["colour"], o["shape"], o["motion"], w / h) for o in row["objects"])
    return render(ClipSpec("shapes", row["background"], objs), t, h, w)


def _two_scores(judged: list[dict]) -> dict:
    n = max(len(judged), 1)
    return {
        "both_colours_visible": sum(all(j["visible"]) for j in judged) / n,
        "background": sum(j["background"] for j in judged) / n,
        "object_shape_and_motion": sum(sum(j["shape_motion"]) for j in judged) / (2 * n),
    }


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
    e.add_argument(
        "--set", default="template", choices=EVAL_SETS,
        help="template: prompts in the training wording; paraphrase: held-out free wordings; two-object",
    )  # fmt: skip
    e.add_argument("--no-enhance", action="store_true", help="give prompts to the text encoder as worded")
    e.add_argument("--int8", action="store_true", help="int8 weights for the DiT's linear layers")
    e.add_argument("--json", default=None, help="also write per-prompt results here")
    e.set_defaults(func=cmd_eval)
