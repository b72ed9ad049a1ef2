"""Editing tasks and long videos on a model: wall time, how well kept frames are kept, how visible chunk seams are.

For each task (extend, interpolate, animate, restyle, inpaint) on a shapes-world clip, and a
long text-to-video: seconds per call, and
  kept_psnr_db   PSNR of the frames the task keeps (extend: the input part; animate: frame 0;
                 interpolate: the first and last frames; inpaint: everything outside the box)
                 against the input; restyle: PSNR against the input (lower = changed more)
  seam_ratio     long video: mean absolute frame-to-frame change at the chunk joins divided by
                 the mean change inside chunks (1 = the joins look like any other frame step)
Writes JSON.

    python benchmarks/edit.py [--checkpoint PATH] [--steps 25] [--long-s 12] [--out benchmarks/results/edit.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from tessera import edit
from tessera.data.world.scenes import render, spec_for
from tessera.pipeline import TesseraPipeline


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t0, 2)


def seam_ratio(pipe: TesseraPipeline, frames: np.ndarray) -> float:
    """Frame-to-frame change at the joins of a long text-to-video over the change inside chunks."""
    window = pipe.window_frames(pipe.config.fps)
    m = round(1.0 * pipe.config.fps / pipe.geometry.frame_step)
    plan = edit._plan(window, len(frames) - window, m, pipe.geometry.frame_step, window, False)
    joins = np.cumsum([window] + [new for new, _, _ in plan[:-1]])  # the first new frame of each chunk
    change = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # change[j]: j -> j + 1
    at = np.zeros(len(change), dtype=bool)
    at[joins - 1] = True
    return float(change[at].mean() / max(change[~at].mean(), 1e-6))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--long-s", type=float, default=12.0)
    ap.add_argument("--out", default="benchmarks/results/edit.json")
    args = ap.parse_args()
    pipe = TesseraPipeline.from_single_file(args.checkpoint)
    s = dict(num_inference_steps=args.steps, width=256, height=256, seed=0)
    clip = render(spec_for("red", "circle", "right", "black", seed=0), 17, 256, 256)  # (17, 256, 256, 3) uint8
    other = render(spec_for("red", "circle", "left", "black", seed=1), 17, 256, 256)
    box = (64, 64, 192, 192)
    out, results = {}, {}
    out["extend"], t = timed(lambda: pipe.extend(clip, "a red circle moving right on a black background", **s))
    results["extend"] = {
        "s": t,
        "frames": len(out["extend"].frames),
        "kept_psnr_db": psnr(out["extend"].frames[:17], clip),
    }
    out["animate"], t = timed(lambda: pipe.animate(clip[:1], "a red circle moving right on a black background", **s))
    results["animate"] = {"s": t, "kept_psnr_db": psnr(out["animate"].frames[:1], clip[:1])}
    o, t = timed(lambda: pipe.interpolate(clip[-1:], other[:1], "a red circle moving left on a black background", **s))
    ends = np.concatenate([o.frames[:1], o.frames[-1:]])
    results["interpolate"] = {"s": t, "kept_psnr_db": psnr(ends, np.concatenate([clip[-1:], other[:1]]))}
    o, t = timed(lambda: pipe.restyle(clip, "a blue square moving right on a black background", strength=0.6, **s))
    results["restyle"] = {"s": t, "psnr_vs_input_db": psnr(o.frames, clip)}
    o, t = timed(lambda: pipe.inpaint(clip, "a green triangle", box=box, from_s=0.5, to_s=1.5, **s))
    outside = np.ones(clip.shape[:3], dtype=bool)
    outside[4:12, 64:192, 64:192] = False
    results["inpaint"] = {"s": t, "kept_psnr_db": psnr(o.frames[outside], clip[outside])}
    o, t = timed(lambda: pipe("a red circle bouncing on a gray background", duration_s=args.long_s, **s))
    results["long"] = {
        "s": t,
        "duration_s": args.long_s,
        "frames": len(o.frames),
        "seam_ratio": seam_ratio(pipe, o.frames),
    }
    result = {
        "model": pipe.name,
        "steps": args.steps,
        "size": "256x256",
        "tasks": results,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.0f}",
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
