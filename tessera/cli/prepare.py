"""`tessera prepare`: videos -> cleaned, captioned, encoded dataset."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tessera.cli.common import UsageError
from tessera.run_folder import exclusive


def cmd_prepare(args: argparse.Namespace) -> int:
    """Videos -> cleaned, captioned, encoded dataset; prints the summary table and JSON."""
    from tessera.checkpoint import CheckpointError
    from tessera.data.ingest.filters import FilterConfig
    from tessera.data.ingest.prepare import PrepareConfig, prepare, summary_table
    from tessera.data.ingest.shots import ShotConfig

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers} must be at least 1")
    if args.gpus_per_encode < 0:
        raise UsageError(f"--gpus-per-encode {args.gpus_per_encode} must be 0 or more")
    for name in ("captioner_model", "unsafe_model"):
        folder = getattr(args, name)
        if folder and not Path(folder).is_dir():
            raise UsageError(
                f"--{name.replace('_', '-')} {folder} is not a folder; pass a local transformers model folder"
            )
    cfg = PrepareConfig(
        shots=ShotConfig(threshold=args.shot_threshold, min_duration_s=args.min_s, max_duration_s=args.max_s),
        filters=FilterConfig(
            max_shake_pct=args.max_shake_pct,
            max_blur=args.max_blur,
            max_blockiness=args.max_blockiness,
            min_bits_per_pixel=args.min_bits_per_pixel,
            min_highlight_luma=args.min_highlight_luma,
            min_motion_pct=args.min_motion_pct,
            unsafe_model=args.unsafe_model or "",
            unsafe_labels=tuple(x.strip() for x in args.unsafe_labels.split(",") if x.strip()),
            max_unsafe=args.max_unsafe,
        ),
        captioner_model=args.captioner_model or "",
        encode=not args.no_encode,
        checkpoint=args.checkpoint or "",
        shapes=tuple(x.strip() for x in args.shapes.split(",") if x.strip()),
        frames=args.frames,
        fps=args.fps,
        clips_per_shard=args.clips_per_shard,
    )
    t0 = time.time()
    runner = None
    if args.ray is not None:
        from tessera.data.ingest.ray_runner import RayRunner

        runner = RayRunner(args.ray, args.workers, not args.quiet, gpus_per_encode=args.gpus_per_encode)
    try:
        with exclusive(args.out, "prepare"):
            summary = prepare(
                args.src, args.out, cfg, workers=args.workers or 1, progress=not args.quiet, runner=runner
            )
    except (CheckpointError, ValueError) as e:  # settings, sources, checkpoint, out folder: exit 2
        if isinstance(e, UsageError):
            raise
        raise UsageError(str(e)) from e
    summary["seconds"] = round(time.time() - t0, 1)
    print(summary_table(summary), file=sys.stderr)
    print(json.dumps(summary))
    return 0


def add_parser(sub) -> None:
    pr = sub.add_parser("prepare", help="videos -> probed, split, filtered, captioned, encoded training dataset")
    pr.add_argument(
        "src",
        help="a folder, a glob (quoted) or a list file of videos (mp4, mov, mkv, webm, avi), "
        "local or as an fsspec URL (s3://bucket/videos/ with s3fs installed)",
    )
    pr.add_argument("--out", required=True, help="dataset folder; rerun with the same folder to resume")
    pr.add_argument(
        "--workers", type=int, default=None, help="processes per stage (default 1); with --ray, tasks in flight"
    )
    pr.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        default=None,
        metavar="ADDRESS",
        help="run the stages as Ray tasks on the cluster at ADDRESS: auto (default: the one `ray start` made), "
        "HOST:PORT, or local (a Ray instance for this run); pip install 'tessera[ray]'",
    )
    pr.add_argument(
        "--gpus-per-encode", type=float, default=1.0, help="with --ray on a cluster with GPUs: GPUs per encode task"
    )
    pr.add_argument("--min-s", type=float, default=2.0, help="clips shorter than this many seconds are rejected")
    pr.add_argument("--max-s", type=float, default=8.0, help="longer shots are cut into clips of at most this")
    pr.add_argument("--shot-threshold", type=float, default=27.0, help="PySceneDetect ContentDetector threshold")
    pr.add_argument("--max-shake-pct", type=float, default=1.2, help="camera jitter, %% of the short side")
    pr.add_argument("--max-blur", type=float, default=0.55, help="no-reference blur 0..1 (Crete re-blur ratio)")
    pr.add_argument("--max-blockiness", type=float, default=1.2, help="8-px block-edge steps / other steps")
    pr.add_argument("--min-bits-per-pixel", type=float, default=0.002, help="source bit rate per pixel per frame")
    pr.add_argument("--min-highlight-luma", type=float, default=60.0, help="99th percentile luma, 0..255")
    pr.add_argument("--min-motion-pct", type=float, default=0.2, help="frame difference, %% of the luma range")
    pr.add_argument("--unsafe-model", default=None, help="local image-classification folder; default: no unsafe filter")
    pr.add_argument(
        "--unsafe-labels", default="nsfw,unsafe,porn,hentai,sexy,explicit", help="the model's unsafe labels"
    )
    pr.add_argument("--max-unsafe", type=float, default=0.5, help="reject above this unsafe probability")
    pr.add_argument("--captioner-model", default=None, help="local image-to-text folder (GIT, BLIP); default: rules")
    pr.add_argument("--no-encode", action="store_true", help="stop after captions: no latents, no shards")
    pr.add_argument("--checkpoint", default=None, help="generation or VAE checkpoint for the latents; default: bundled")
    pr.add_argument("--shapes", default="256x256,448x256,256x448", help="training shapes WIDTHxHEIGHT, comma-separated")
    pr.add_argument("--frames", type=int, default=17, help="frames per clip, 1 + k × the VAE's time factor (4)")
    pr.add_argument("--fps", type=float, default=8.0, help="frame rate the clip frames are sampled at")
    pr.add_argument("--clips-per-shard", type=int, default=256)
    pr.add_argument("--quiet", action="store_true", help="no progress bars")
    pr.set_defaults(func=cmd_prepare)
