"""`tessera prefer`: preference tuning of a generation checkpoint from automatic feedback (tessera/prefer.py)."""

from __future__ import annotations

import argparse
import json

from tessera.cli.common import check_device, check_scheduler, log_to_stderr
from tessera.run_folder import exclusive


def cmd_prefer(args: argparse.Namespace) -> int:
    """Sample, judge, pair and DPO-tune a generation checkpoint."""
    from tessera.checkpoint import bundled_path
    from tessera.prefer import PreferenceConfig, tune

    check_scheduler("--scheduler", args.scheduler)
    check_device("--device", args.device)
    # PreferenceConfig checks every setting, naming its flag (exit 2)
    pc = PreferenceConfig(
        prompts=args.prompts, samples=args.samples, scheduler=args.scheduler, steps=args.steps,
        guidance=args.guidance, temporal_weight=args.temporal_weight, min_gap=args.min_gap, beta=args.beta,
        train_steps=args.train_steps, batch=args.batch, lr=args.lr, save_every=args.save_every,
        height_px=args.height, width_px=args.width, duration_s=args.duration_s, seed=args.seed,
        wording=args.wording,
    )  # fmt: skip
    log_to_stderr()  # progress lines on stderr; stdout stays the JSON summary
    with exclusive(args.out, "prefer"):
        summary = tune(args.model or bundled_path(), args.out, pc, device=args.device)
    print(json.dumps(summary))
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("prefer", help="preference tuning from automatic feedback (sample, judge, pair, DPO)")
    s.add_argument("--out", required=True, help="folder for the samples, the state and OUT/preferred.safetensors")
    s.add_argument("--model", default=None, help="generation checkpoint to tune (default: the bundled model)")
    s.add_argument("--prompts", type=int, default=160, help="grammar prompts sampled (combinations eval never asks)")
    s.add_argument("--samples", type=int, default=4, help="clips per prompt; the best and worst make a pair")
    s.add_argument("--scheduler", default="dpm++2m")
    s.add_argument("--steps", type=int, default=12, help="sampling steps")
    s.add_argument("--guidance", type=float, default=4.0)
    s.add_argument("--temporal-weight", type=float, default=0.25, help="judge: weight of consistency and flicker")
    s.add_argument("--min-gap", type=float, default=1.0, help="least score gap of a pair (1 = one attribute)")
    s.add_argument("--beta", type=float, default=1000.0, help="DPO strength: how far from the model it may move")
    s.add_argument("--train-steps", type=int, default=300)
    s.add_argument("--batch", type=int, default=4, help="pairs per training step")
    s.add_argument("--lr", type=float, default=1e-5)
    s.add_argument("--save-every", type=int, default=50, help="training steps between resumable states")
    s.add_argument("--width", type=int, default=256)
    s.add_argument("--height", type=int, default=256)
    s.add_argument("--duration-s", type=float, default=2.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--wording", choices=("template", "rich", "full"), default="template",
        help="prompt wording: the template, or every other prompt a caption in the vocabularies' train (rich) or all (full) words",
    )  # fmt: skip
    s.add_argument("--device", default=None, help="cpu or cuda (default: a GPU if there is one)")
    s.set_defaults(func=cmd_prefer)
