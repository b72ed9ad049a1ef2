"""`tessera distill`: a few-step student of a generation checkpoint (tessera/distill.py)."""

from __future__ import annotations

import argparse
import json

from tessera.cli.common import UsageError, check_device, check_scheduler, log_to_stderr
from tessera.run_folder import exclusive


def cmd_distill(args: argparse.Namespace) -> int:
    """Distil a generation checkpoint into a few-step student without guidance."""
    from tessera.checkpoint import bundled_path
    from tessera.distill import StudentConfig, train_student

    check_scheduler("--teacher-scheduler", args.teacher_scheduler)
    check_device("--device", args.device)
    # StudentConfig checks every setting, naming its flag (exit 2)
    sc = StudentConfig(
        pairs=args.pairs, method=args.method, own_states=args.own_states, teacher_scheduler=args.teacher_scheduler, teacher_steps=args.teacher_steps,
        guidance=args.guidance, steps=args.distill_steps, batch=args.distill_batch, lr=args.distill_lr,
        student_steps=args.student_steps, height_px=args.height, width_px=args.width,
        duration_s=args.duration_s, seed=args.seed, save_every=args.save_every,
    )  # fmt: skip
    if args.teacher_steps % args.student_steps:
        k = args.student_steps
        raise UsageError(
            f"--teacher-steps {args.teacher_steps} is not a multiple of --student-steps {k}: the teacher's grid "
            f"must hold the student's call times; try --teacher-steps {k * max(1, round(args.teacher_steps / k))}"
        )
    if args.pack_only:
        from pathlib import Path

        from tessera.distill import pack_student

        student = Path(args.out) / "student.safetensors"
        packed = pack_student(student, args.teacher or bundled_path(), Path(args.out) / "student-int8.safetensors")
        print(json.dumps({"compact": str(packed)}))
        return 0
    log_to_stderr()  # progress lines on stderr; stdout stays the JSON summary
    with exclusive(args.out, "distill"):
        summary = train_student(args.teacher or bundled_path(), args.out, sc, device=args.device)
    print(json.dumps(summary))
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("distill", help="few-step student of a generation checkpoint (guidance distilled in)")
    s.add_argument("--out", required=True, help="folder for the pairs, the state and the student checkpoint")
    s.add_argument("--teacher", default=None, help="generation checkpoint to distil (default: the bundled model)")
    s.add_argument("--pairs", type=int, default=1024, help="teacher paths (noise, states, sample)")
    s.add_argument(
        "--method", choices=("trajectory", "reflow"), default="trajectory",
        help="trajectory: land on the teacher's state at each of the student's steps; reflow: straight lines",
    )  # fmt: skip
    s.add_argument(
        "--own-states", type=float, default=0.5,
        help="trajectory: share of samples that start from the student's own previous step",
    )  # fmt: skip
    s.add_argument("--teacher-scheduler", default="dpm++2m")
    s.add_argument("--teacher-steps", type=int, default=12)
    s.add_argument("--guidance", type=float, default=4.0, help="teacher guidance, distilled into the student")
    s.add_argument("--distill-steps", type=int, default=2000, help="student training steps")
    s.add_argument("--distill-batch", type=int, default=8)
    s.add_argument("--distill-lr", type=float, default=5e-5)
    s.add_argument(
        "--pack-only", action="store_true",
        help="only write OUT/student-int8.safetensors (DiT in int8, VAE shared with the teacher) from OUT/student.safetensors",
    )  # fmt: skip
    s.add_argument("--save-every", type=int, default=100, help="training steps between resumable states")
    s.add_argument("--student-steps", type=int, default=4, help="Euler steps the student samples with")
    s.add_argument("--width", type=int, default=256)
    s.add_argument("--height", type=int, default=256)
    s.add_argument("--duration-s", type=float, default=2.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default=None, help="cpu or cuda (default: a GPU if there is one)")
    s.set_defaults(func=cmd_distill)
