"""Throughput and filter quality of `tessera prepare` on generated clips.

Writes N shapes-world clips (60 % clean; 10 % each shaken, blurred, JPEG-crushed and
darkened) plus about 5 % bad files (zero-byte, truncated, random bytes, text, audio-only),
runs every stage with the bundled model's VAE, and reports clips per second for each
stage and the whole pipeline, and precision / recall of each quality filter against the
known corruption labels. Results are printed and written as JSON.

`--ray` also runs the same clips as Ray tasks on a local Ray instance of `--workers` CPUs,
started before the clock (as `ray start` is before `tessera prepare --ray auto`), and
reports both runs side by side: the ratio of the Ray run's time to the local pool's, the
load average of the machine around each run, and whether both wrote the same manifest.

    python benchmarks/prepare.py [--clips 200] [--workers 2] [--size 256] [--out benchmarks/results/prepare.json]
    python benchmarks/prepare.py --ray [--clips 200] [--workers 2]   # writes benchmarks/results/prepare_ray.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tessera.data.ingest.prepare import PrepareConfig, prepare, read_manifest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the generated videos of the tests
from fixtures.videos import BAD_KINDS, CORRUPTIONS, write_bad_file, write_world_videos  # noqa: E402

FILTER_OF = {"shake": "shake", "blur": "blur", "compress": "compression", "dark": "dark"}


def make_crawl(root: Path, clips: int, size_px: int, seed: int) -> dict[str, int]:
    """Clean and corrupted clips in one folder per label, bad files in `bad/`; returns counts per label."""
    n_bad = max(1, round(0.05 * clips))
    n_video = clips - n_bad
    n_corrupt = max(1, round(0.1 * n_video))
    if n_video - n_corrupt * len(CORRUPTIONS) < 1:
        raise SystemExit(f"--clips {clips} is too few for clean, four corruptions and bad files; use at least 8")
    counts = {"clean": n_video - n_corrupt * len(CORRUPTIONS), **dict.fromkeys(CORRUPTIONS, n_corrupt)}
    first = 0
    for label, n in counts.items():
        write_world_videos(
            root / label,
            n,
            seed=seed,
            height_px=size_px,
            width_px=size_px,
            corruption=None if label == "clean" else label,
            first=first,
        )
        first += n
    good = sorted((root / "clean").glob("*.mp4"))[0]
    for i in range(n_bad):
        kind = BAD_KINDS[i % len(BAD_KINDS)]
        write_bad_file(root / "bad" / f"bad_{i:03d}.mp4", kind, good, seed=i)
    counts["bad"] = n_bad
    return counts


def filter_scores(records: list[dict]) -> dict:
    """Precision and recall of each filter against the folder label of its clip."""
    clips = [r for r in records if "filters" in r and "shake" in r["filters"]]
    out = {}
    for corruption, name in FILTER_OF.items():
        truth = np.array([Path(r["source"]).parent.name == corruption for r in clips])
        fired = np.array([not r["filters"][name]["pass"] for r in clips])
        tp = int((truth & fired).sum())
        out[name] = {
            "precision": round(tp / max(1, int(fired.sum())), 3),
            "recall": round(tp / max(1, int(truth.sum())), 3),
            "flagged": int(fired.sum()),
            "corrupted": int(truth.sum()),
        }
    return out


def ray_run(root: Path, tmp: Path, cfg: PrepareConfig, workers: int, local_s: float) -> dict:
    """The same run as Ray tasks on a local instance of `workers` CPUs, started before the clock."""
    import ray

    from tessera.data.ingest.ray_runner import RayRunner

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    start_s = time.perf_counter() - t0
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    summary = prepare(root, tmp / "dataset_ray", cfg, progress=True, runner=RayRunner("auto", workers, True))
    ray_s = time.perf_counter() - t0
    load = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    ray.shutdown()
    same = (tmp / "dataset" / "manifest.jsonl").read_bytes() == (tmp / "dataset_ray" / "manifest.jsonl").read_bytes()
    return {
        "workers": workers,
        "cluster_start_seconds": round(start_s, 1),
        "pipeline_seconds": round(ray_s, 1),
        "load_average_1min_before_after": load,
        "ratio_ray_to_local": round(ray_s / local_s, 3),
        "overhead_pct": round(100 * (ray_s / local_s - 1), 1),
        "same_manifest": same,
        "stages": summary["stage_timings"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=200, help="files in the generated crawl, bad files included")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=256, help="side of the generated clips in pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default="", help="generation checkpoint for the VAE; default: bundled")
    ap.add_argument("--ray", action="store_true", help="also run on a local Ray instance; report both")
    ap.add_argument(
        "--out", default=None, help="default: benchmarks/results/prepare.json (prepare_ray.json with --ray)"
    )
    args = ap.parse_args()
    args.out = args.out or f"benchmarks/results/prepare{'_ray' if args.ray else ''}.json"

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "crawl"
        t0 = time.perf_counter()
        counts = make_crawl(root, args.clips, args.size, args.seed)
        gen_s = time.perf_counter() - t0
        print(f"generated {sum(counts.values())} files in {gen_s:.1f} s: {counts}")

        cfg = PrepareConfig(checkpoint=args.checkpoint, shapes=("256x256",))
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        summary = prepare(root, Path(tmp) / "dataset", cfg, workers=args.workers, progress=True)
        total_s = time.perf_counter() - t0
        load = [round(load_before, 1), round(os.getloadavg()[0], 1)]
        records = read_manifest(Path(tmp) / "dataset" / "manifest.jsonl")
        ray_result = ray_run(root, Path(tmp), cfg, args.workers, total_s) if args.ray else None

    stages = {
        name: {**t, "clips_per_s": round(t["items"] / t["seconds"], 2) if t["seconds"] > 0 else None}
        for name, t in summary.pop("stage_timings").items()
    }
    scores = filter_scores(records)
    result = {
        "benchmark": "tessera prepare on generated world clips",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "files": sum(counts.values()),
        "labels": counts,
        "size_px": args.size,
        "workers": args.workers,
        "pipeline_seconds": round(total_s, 1),
        "load_average_1min_before_after": load,
        "pipeline_files_per_s": round(sum(counts.values()) / total_s, 3),
        "stages": stages,
        "filters": scores,
        "summary": summary,
        "clips_split_before_filtering": sum(1 for r in records if "too_short" in r["reasons"]),
        "bad_files_listed": sum(1 for r in records if Path(r["source"]).parent.name == "bad" and r.get("detail")),
    }
    print(f"\n{'stage':10s} {'items':>6s} {'seconds':>9s} {'clips/s':>8s}")
    for name, t in stages.items():
        print(f"{name:10s} {t['items']:6d} {t['seconds']:9.2f} {t['clips_per_s'] or 0:8.2f}")
    print(f"whole pipeline: {result['pipeline_files_per_s']} files/s ({total_s:.1f} s)")
    print(f"\n{'filter':12s} {'precision':>9s} {'recall':>7s}")
    for name, s in scores.items():
        print(f"{name:12s} {s['precision']:9.3f} {s['recall']:7.3f}")
    print(f"bad files listed with a reason: {result['bad_files_listed']} of {counts['bad']}")
    if ray_result:
        result["ray"] = ray_result
        print(
            f"\nlocal pool {total_s:.1f} s (load {load}), Ray {ray_result['pipeline_seconds']} s "
            f"(load {ray_result['load_average_1min_before_after']}), {args.workers} workers each: "
            f"Ray / local = {ray_result['ratio_ray_to_local']}; same manifest: {ray_result['same_manifest']}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
