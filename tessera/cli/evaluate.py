"""`tessera eval`: prompt adherence judged from the decoded frames; `--suite` runs every measure at once."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tessera.cli.common import (
    SEED_MAX,
    UsageError,
    check_folder,
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
    check_int("--repeat", args.repeat, 1, 10)
    if not args.suite:
        for flag, given in (("--out", args.out), ("--quick", args.quick), ("--repeat", args.repeat != 1)):
            if given:
                raise UsageError(f"{flag} belongs to the suite; add --suite or drop {flag}")
        return
    check_folder("--out", args.out)
    for flag, given in (("--json", args.json), ("--set", args.set != "template"), ("--no-enhance", args.no_enhance)):
        if given:
            raise UsageError(f"--suite runs every set (enhancer on and off) and writes OUT/suite.json; drop {flag}")


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
    if args.suite:
        return cmd_eval_suite(args, pipe)
    if args.set == "two-object":
        return cmd_eval_two_object(args, pipe)
    n = 120 if args.prompts is None else args.prompts
    cases = (
        paraphrase_cases(n)
        if args.set == "paraphrase"
        else eval_cases(n, seed=1234 if args.seed is None else args.seed)
    )
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

    result, analyses = adherence(gen, cases, batch=args.batch or 8, progress=progress("eval"), partial=partial)
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
    """Two objects per prompt, each judged on the pixels of its colour (tessera.eval.two_object)."""
    from tessera.eval import read_eval_set, two_object

    rows = read_eval_set("two_object")[: 120 if args.prompts is None else args.prompts]
    settings = dict(
        num_inference_steps=args.steps, guidance_scale=args.guidance, width=args.width, height=args.height,
        duration_s=args.duration_s, scheduler=args.scheduler, enhance=not args.no_enhance,
    )  # fmt: skip

    def gen(prompts, seeds):
        return [out.frames for out in pipe(list(prompts), seed=list(seeds), **settings)]

    t0 = time.time()
    result, judged = two_object(gen, rows, batch=args.batch or 8, progress=progress("eval"))
    result |= {"seconds": round(time.time() - t0, 1), "set": "two-object", "enhance": not args.no_enhance}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": result, "judged": judged}, indent=1))
    return 0


def cmd_eval_suite(args: argparse.Namespace, pipe) -> int:
    """Every measure in one run (tessera.suite); flags given override the suite's sizes and main setting."""
    from dataclasses import replace

    from tessera.suite import QUICK, SuiteConfig, run_suite

    cfg = QUICK if args.quick else SuiteConfig()
    given = {
        "templates": args.prompts, "steps": args.steps, "guidance": args.guidance, "scheduler": args.scheduler,
        "width_px": args.width, "height_px": args.height, "duration_s": args.duration_s,
        "batch": args.batch, "seed": args.seed, "repeat": args.repeat, "int8": args.int8 or None,
    }  # fmt: skip
    cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None})
    out = Path(args.out or "eval-suite")
    result = run_suite(pipe, cfg, out, progress=progress)
    t = result["template"]["adherence"]
    print(json.dumps({
        "json": str(out / "suite.json"), "markdown": str(out / "suite.md"),
        "plots": [str(out / "adherence_vs_steps.png"), str(out / "adherence_vs_guidance.png")],
        "template": {a: t[a]["value"] for a in t}, "seconds": result["seconds"], "cpu_seconds": result["cpu_seconds"],
    }, indent=2))  # fmt: skip
    return 0


def add_parser(sub) -> None:
    e = sub.add_parser("eval", help="prompt adherence measured from the decoded frames")
    e.add_argument("--checkpoint", default=None)
    e.add_argument(
        "--prompts", type=int, default=None, help="prompts of the set (default 120; --suite: template prompts)"
    )
    e.add_argument("--seed", type=int, default=None, help="draws the template prompts (default 1234)")
    e.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, 25)")
    e.add_argument("--guidance", type=float, default=None, help="guidance (default: the model's, 4)")
    e.add_argument("--width", type=int, default=None)
    e.add_argument("--height", type=int, default=None)
    e.add_argument("--duration-s", type=float, default=None)
    e.add_argument("--batch", type=int, default=None, help="prompts per generation call (default 8)")
    e.add_argument("--scheduler", default=None, help="solver (default: the model's, euler)")
    e.add_argument(
        "--set", default="template", choices=EVAL_SETS,
        help="template: prompts in the training wording; paraphrase: held-out free wordings; two-object",
    )  # fmt: skip
    e.add_argument("--no-enhance", action="store_true", help="give prompts to the text encoder as worded")
    e.add_argument("--int8", action="store_true", help="int8 weights for the DiT's linear layers")
    e.add_argument("--json", default=None, help="also write per-prompt results here")
    e.add_argument(
        "--suite", action="store_true",
        help="every measure at once (template, paraphrase and two-object sets, temporal, VAE, time, steps and "
        "guidance sweep): OUT/suite.json, OUT/suite.md and PNGs; sized for under 20 min on an idle 2-core CPU",
    )  # fmt: skip
    e.add_argument("--out", default=None, help="--suite: the folder for its files (default eval-suite)")
    e.add_argument("--quick", action="store_true", help="--suite: a few prompts at 128x128, 0.5 s (a smoke run)")
    e.add_argument("--repeat", type=int, default=1, help="--suite: run the template adherence N times, other seeds")
    e.set_defaults(func=cmd_eval)
