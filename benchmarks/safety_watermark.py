"""Safety benchmarks, the watermark sections (`benchmarks/safety.py` runs them too, with defaults): robustness of the keyed mark on generated videos, and
false detections (mark or fingerprint fallback) on unmarked videos.

    python benchmarks/safety_watermark.py [--only watermark_robustness,watermark_false_positives]
        [--videos 50] [--unmarked 200] [--steps 4] [--workers 2] [--cache DIR]

`watermark_robustness`: the bundled model generates `--videos` clips of mixed sizes, durations and
frame rates; each is marked under a fresh installation key, written as the MP4 a user gets, read
back, attacked (H.264 CRF 28 / 35, resize 0.5× / 0.75×, crop 10 % / 25 % off each side, 15 fps,
a 1 s sub-clip, brightness ±20 %, JPEG quality 50 per frame, Gaussian noise σ 5, horizontal flip)
and read with `watermark.detect`. Per attack: detection rate (the right payload under our key) and
coded-bit accuracy (hard decisions at the found place, before error correction); plus the PSNR
the mark costs. `watermark_false_positives`: `--unmarked` unmarked clips (flat colours, gradients,
noise, shapes-world clips, photo pans, real-looking footage), each written as an MP4 and run through
`verify_file` against a ledger holding the generated clips' records: how many are reported as
marked (ours, legacy or foreign) or traced to a generation by any route. Each section writes
`benchmarks/results/safety_<section>.json`.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import multiprocessing as mp
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from tessera.export import read_video, write_mp4
from tessera.safety import watermark as wm
from tessera.safety.keys import LEGACY_KEY, InstallationKey
from tessera.safety.ledger import Ledger, ProvenanceRecord

RESULTS = Path("benchmarks/results")
SIZES = ((256, 256), (448, 256), (256, 448), (320, 192), (192, 320), (384, 256))  # (width, height)
TIMING = ((1.0, 8), (2.0, 8), (3.0, 8), (1.0, 16))  # (duration_s, fps)
PROMPTS = (
    "a red circle moving left on a black background",
    "a blue square bouncing on a gray background",
    "a yellow triangle spinning on a navy background",
    "a green circle growing on a black background",
    "a white square moving up on a navy background",
    "an orange triangle moving right on a gray background",
    "the camera pans slowly right across a photo of a cat",
    "the camera zooms in on a photo of a cup of coffee",
    "a purple circle shrinking on a gray background",
    "the camera pans slowly left across a photo of grass",
)
KEY = InstallationKey(bytes.fromhex("5a" * 32), "benchmark")
MODEL_ID = "tessera-small"
TARGETS = {"h264_crf28": 0.99, "resize_0.5": 0.99, "crop_10pct": 0.99, "fps_15": 0.99, "subclip_1s": 0.99}


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)"


# -- the generated videos -------------------------------------------------------------------------


def _requests(n: int) -> list[dict]:
    """Mixed sizes, durations and frame rates: each a dict of `TesseraPipeline.__call__` arguments."""
    reqs = []
    for i in range(n):
        (w, h), (duration_s, fps) = SIZES[i % len(SIZES)], TIMING[(i // len(SIZES)) % len(TIMING)]
        reqs.append(
            {
                "prompt": PROMPTS[i % len(PROMPTS)],
                "seed": i,
                "width": w,
                "height": h,
                "duration_s": duration_s,
                "fps": fps,
            }
        )
    return reqs


def _generate_clean(n: int, steps: int) -> list[np.ndarray]:
    """The bundled model's frames before the mark, (T, H, W, 3) uint8 each; one batch per shape."""
    import torch

    from tessera.pipeline import TesseraPipeline
    from tessera.safety.watermarker import Ledger

    scratch = Path(tempfile.mkdtemp())
    pipe = TesseraPipeline.from_single_file(ledger=Ledger(scratch / "ledger.sqlite3", key=KEY))
    reqs, clean = _requests(n), [None] * n
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(reqs):
        groups.setdefault((r["width"], r["height"], r["duration_s"], r["fps"]), []).append(i)
    for (w, h, duration_s, fps), idx in groups.items():
        outs = pipe(
            [reqs[i]["prompt"] for i in idx], seed=[reqs[i]["seed"] for i in idx], num_inference_steps=steps,
            width=w, height=h, duration_s=duration_s, fps=fps, output_type="latent",
        )  # fmt: skip
        with torch.no_grad():
            frames = pipe._decode(torch.stack([o.latents for o in outs]).to(pipe.device))  # before the mark
        for i, f in zip(idx, frames):
            clean[i] = f
        print(
            f"generated {sum(c is not None for c in clean)}/{n} (batch of {len(idx)} at {w}x{h}, {duration_s} s, {fps} fps)",
            flush=True,
        )
    return clean


@functools.cache
def generated(n: int, steps: int, cache: str = "") -> list[dict]:
    """n clips from the bundled model: {"id", "fps", "clean" (T, H, W, 3), "marked", "file" frames as written}.

    With `cache`, the clean clips are kept in an .npz there and reused by a later run with the
    same n and steps.
    """
    path = Path(cache) / f"generated_{n}_{steps}.npz" if cache else None
    if path is not None and path.exists():
        stored = np.load(path)
        clean = [stored[f"v{i}"] for i in range(n)]
    else:
        clean = _generate_clean(n, steps)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **{f"v{i}": c for i, c in enumerate(clean)})
    marker_key, out, tmp = KEY.derive("watermark"), [], Path(tempfile.mkdtemp())
    for i, (req, frames) in enumerate(zip(_requests(n), clean)):
        gid = f"bench-{i:03d}"
        marked = wm.embed(frames, wm.make_payload(MODEL_ID, gid), marker_key)
        written, _ = read_video(write_mp4(marked, tmp / f"{gid}.mp4", fps=req["fps"]))
        out.append(
            {"id": gid, "model": MODEL_ID, "fps": req["fps"], "clean": frames, "marked": marked, "file": written}
        )
    return out


# -- attacks --------------------------------------------------------------------------------------


def _h264(frames: np.ndarray, fps: int, crf: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        even = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
        return read_video(write_mp4(even, Path(tmp) / "a.mp4", fps=fps, crf=crf))[0]


def _resize(frames: np.ndarray, factor: float) -> np.ndarray:
    h, w = round(frames.shape[1] * factor), round(frames.shape[2] * factor)
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC)) for f in frames])


def _crop(frames: np.ndarray, each_side: float) -> np.ndarray:
    h, w = frames.shape[1:3]
    dy, dx = int(h * each_side), int(w * each_side)
    return frames[:, dy : h - dy, dx : w - dx]


def _fps(frames: np.ndarray, fps: int, new_fps: int) -> np.ndarray:
    times = np.arange(0, len(frames) / fps, 1 / new_fps)
    return _h264(frames[np.minimum(np.round(times * fps).astype(int), len(frames) - 1)], new_fps, 23)


def _subclip(frames: np.ndarray, fps: int) -> np.ndarray:
    start = max(0, (len(frames) - fps) // 2)
    return _h264(frames[start : start + fps], fps, 23)


def _jpeg(frames: np.ndarray, quality: int) -> np.ndarray:
    out = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, "JPEG", quality=quality)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return np.stack(out)


ATTACKS = {
    "h264_crf28": lambda f, fps: _h264(f, fps, 28),
    "h264_crf35": lambda f, fps: _h264(f, fps, 35),
    "resize_0.5": lambda f, fps: _resize(f, 0.5),
    "resize_0.75": lambda f, fps: _resize(f, 0.75),
    "crop_10pct": lambda f, fps: _crop(f, 0.10),
    "crop_25pct": lambda f, fps: _crop(f, 0.25),
    "fps_15": lambda f, fps: _fps(f, fps, 15),
    "subclip_1s": lambda f, fps: _subclip(f, fps),
    "brightness_+20pct": lambda f, fps: np.clip(f * 1.2, 0, 255).astype(np.uint8),
    "brightness_-20pct": lambda f, fps: np.clip(f * 0.8, 0, 255).astype(np.uint8),
    "jpeg_q50": lambda f, fps: _jpeg(f, 50),
    "noise_sigma5": lambda f, fps: np.clip(f + np.random.default_rng(0).normal(0, 5, f.shape), 0, 255).astype(np.uint8),
    "hflip": lambda f, fps: f[:, :, ::-1],
}

_VIDEOS: list[dict] = []  # set before the worker pool forks


def _attack_job(job: tuple[int, str]) -> dict:
    i, attack = job
    v = _VIDEOS[i]
    frames = ATTACKS[attack](v["file"], v["fps"])
    key = KEY.derive("watermark")
    found = wm.detect(frames, (key, LEGACY_KEY))
    expected = wm.encode_bits(wm.make_payload(v["model"], v["id"]), key)
    bit_acc = float(np.mean((found.soft_bits(key) < 0) == expected.astype(bool)))
    ok = found.payload == wm.make_payload(v["model"], v["id"]) and found.key == key
    return {"video": i, "attack": attack, "detected": bool(ok), "bit_accuracy": bit_acc, "sync_z": found.sync_z}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def _robustness_table(rows: list[dict]) -> dict:
    table = {}
    for attack in ATTACKS:
        mine = [r for r in rows if r["attack"] == attack]
        if mine:
            table[attack] = {
                "detection_rate": round(float(np.mean([r["detected"] for r in mine])), 3),
                "bit_accuracy": round(float(np.mean([r["bit_accuracy"] for r in mine])), 3),
                "videos": len(mine),
                "target": TARGETS.get(attack),
            }
    return table


def section_watermark_robustness(args) -> dict:
    global _VIDEOS
    _VIDEOS = generated(args.videos, args.steps, args.cache)
    jobs = [(i, a) for i in range(len(_VIDEOS)) for a in ATTACKS]
    t0, rows = time.time(), []
    partial = RESULTS / "safety_watermark_robustness.partial.json"
    with mp.get_context("fork").Pool(args.workers) as pool:
        for row in pool.imap_unordered(_attack_job, jobs, chunksize=2):
            rows.append(row)
            if len(rows) % 50 == 0:  # a long run leaves figures behind even if it is stopped
                partial.write_text(json.dumps({"jobs_done": len(rows), "attacks": _robustness_table(rows)}, indent=2))
    partial.unlink(missing_ok=True)
    table = _robustness_table(rows)
    for attack, v in table.items():
        print(f"{attack:18s} detection {v['detection_rate']:.3f}  bit accuracy {v['bit_accuracy']:.3f}")
    psnrs = [psnr(v["clean"], v["marked"]) for v in _VIDEOS]
    shapes = sorted({f"{v['clean'].shape[2]}x{v['clean'].shape[1]}x{len(v['clean'])}@{v['fps']}" for v in _VIDEOS})
    return {
        "videos": len(_VIDEOS),
        "shapes": shapes,
        "steps": args.steps,
        "attacks": table,
        "psnr_db": {"mean": round(float(np.mean(psnrs)), 2), "min": round(float(np.min(psnrs)), 2), "target": 40.0},
        "detect_seconds_per_clip": round((time.time() - t0) * args.workers / len(jobs), 2),
    }


# -- unmarked videos ------------------------------------------------------------------------------


def _gradient(rng, t, h, w) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    g = np.cos(angle) * xx + np.sin(angle) * yy
    g = (g - g.min()) / (np.ptp(g) + 1e-9)
    lo, hi = rng.uniform(0, 255, (2, 3))
    frame = lo + g[..., None] * (hi - lo)  # (H, W, 3)
    return np.repeat(frame[None], t, 0).astype(np.uint8)


def _noise(rng, t, h, w) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:
        return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    sigma = 5.0 if kind == 1 else 30.0
    return np.clip(rng.uniform(40, 200) + rng.normal(0, sigma, (t, h, w, 3)), 0, 255).astype(np.uint8)


def _footage(rng, t, h, w) -> np.ndarray:
    """Real-looking: 1/f clouds or a bundled photo, hand-held drift and shake, a moving blob, sensor noise."""
    if rng.random() < 0.5:
        spectrum = np.fft.fft2(rng.normal(size=(2 * h, 2 * w)))
        fy, fx = np.meshgrid(np.fft.fftfreq(2 * h), np.fft.fftfreq(2 * w), indexing="ij")
        field = np.fft.ifft2(spectrum / np.maximum(np.hypot(fy, fx), 1 / (2 * w))).real
        base = np.stack([field, np.roll(field, 7, 0), np.roll(field, 7, 1)], -1)
        base = (base - base.mean()) / base.std() * 45 + 120
    else:
        import skimage.data

        img = getattr(skimage.data, str(rng.choice(["astronaut", "chelsea", "coffee", "rocket", "camera"])))()
        img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3]
        base = np.asarray(Image.fromarray(img).resize((2 * w, 2 * h), Image.BICUBIC), np.float32)
    out = np.empty((t, h, w, 3), np.uint8)
    drift = rng.uniform(-3, 3, 2)
    yy, xx = np.mgrid[:h, :w]
    for i in range(t):
        dy, dx = (drift * i + rng.normal(0, 1.5, 2) + [h / 2, w / 2]).astype(int)
        frame = base[dy : dy + h, dx : dx + w].astype(np.float32)
        c = (h / 2 + 20 * np.sin(i / 3), w * (0.2 + 0.6 * i / t))
        frame[(yy - c[0]) ** 2 + (xx - c[1]) ** 2 < (h / 8) ** 2] *= 0.6
        out[i] = np.clip(gaussian_filter(frame, (0.7, 0.7, 0)) + rng.normal(0, 2, frame.shape), 0, 255)
    return out


def unmarked_clips(n: int) -> list[tuple[str, np.ndarray]]:
    from tessera.data.world import WorldConfig, render, sample_spec

    rng = np.random.default_rng(1234)
    kinds = ("flat", "gradient", "noise", "world", "pan", "footage")
    share = {"flat": 0.15, "gradient": 0.15, "noise": 0.15, "world": 0.25, "pan": 0.15, "footage": 0.15}
    counts = {k: int(round(share[k] * n)) for k in kinds}
    counts["world"] += n - sum(counts.values())
    out = []
    for kind in kinds:
        for _ in range(counts[kind]):
            w, h = SIZES[rng.integers(len(SIZES))]
            t = int(rng.choice([9, 17, 25]))
            if kind == "flat":
                clip = np.broadcast_to(rng.integers(0, 256, 3).astype(np.uint8), (t, h, w, 3)).copy()
            elif kind == "gradient":
                clip = _gradient(rng, t, h, w)
            elif kind == "noise":
                clip = _noise(rng, t, h, w)
            elif kind in ("world", "pan"):
                cfg = WorldConfig(pan_fraction=1.0 if kind == "pan" else 0.0)
                clip = render(sample_spec(rng, w / h, cfg), t, h, w)
            else:
                clip = _footage(rng, t, h, w)
            out.append((kind, clip))
    return out


def _verify_job(job: tuple[int, str, np.ndarray, str]) -> dict:
    from tessera.safety.provenance import verify_file

    i, kind, clip, ledger_path = job
    with tempfile.TemporaryDirectory() as tmp:
        path = write_mp4(clip, Path(tmp) / f"u{i}.mp4", fps=8, crf=23)
        frames, _ = read_video(path)
        report = verify_file(path, frames, KEY, Ledger(ledger_path, key=KEY))
    return {
        "kind": kind,
        "mark": report.mark["present"],
        "ledger": report.ledger["found"],
        "traced": report.traced,
        "sync_z": report.mark["sync_z"],
        "distance": report.ledger.get("distance"),
        "verdict": report.verdict,
    }


def section_watermark_false_positives(args) -> dict:
    videos = generated(args.videos, args.steps, args.cache)
    ledger_path = Path(tempfile.mkdtemp()) / "ledger.sqlite3"
    ledger = Ledger(ledger_path, key=KEY)
    for v in videos:
        meta = dict(generation_id=v["id"], kind="generate", model_id=v["model"], model_hash="-", seed=0)
        ledger.append(
            ProvenanceRecord.create(v["marked"], prompt="-", key=KEY, settings={}, filter_decision="-", **meta)
        )
    ledger.append(
        ProvenanceRecord.create(
            np.zeros((9, 256, 256, 3), np.uint8),
            prompt="-",
            key=KEY,
            generation_id="black",
            kind="generate",
            model_id="tessera",
            model_hash="-",
            seed=0,
            settings={},
            filter_decision="-",
        )
    )  # noqa: E501
    clips = unmarked_clips(args.unmarked)
    order = np.random.default_rng(0).permutation(len(clips))  # kinds interleaved, so partial figures cover all
    jobs = [(int(i), clips[i][0], clips[i][1], str(ledger_path)) for i in order]
    rows, partial = [], RESULTS / "safety_watermark_false_positives.partial.json"
    with mp.get_context("fork").Pool(args.workers) as pool:
        for row in pool.imap_unordered(_verify_job, jobs):
            rows.append(row)
            if len(rows) % 20 == 0:  # a long run leaves figures behind even if it is stopped
                false = sum(r["mark"] or r["ledger"] or r["traced"] for r in rows)
                kinds = {k: sum(r["kind"] == k for r in rows) for k in sorted({r["kind"] for r in rows})}
                best = max(r["sync_z"] for r in rows)
                partial.write_text(
                    json.dumps({"checked": len(rows), "false_detections": false, "kinds": kinds, "max_sync_z": best})
                )
    partial.unlink(missing_ok=True)
    by_kind = {}
    for kind in sorted({r["kind"] for r in rows}):
        mine = [r for r in rows if r["kind"] == kind]
        by_kind[kind] = {
            "clips": len(mine),
            "marked": sum(r["mark"] for r in mine),
            "ledger_match": sum(r["ledger"] for r in mine),
            "traced": sum(r["traced"] for r in mine),
            "max_sync_z": round(max(r["sync_z"] for r in mine), 2),
        }
        print(f"{kind:9s} {by_kind[kind]}")
    false = [r for r in rows if r["mark"] or r["ledger"] or r["traced"]]
    return {
        "unmarked_clips": len(rows),
        "ledger_records": len(videos) + 1,
        "false_detections": len(false),
        "false_examples": [{"kind": r["kind"], "distance": r["distance"], "verdict": r["verdict"]} for r in false[:10]],
        "by_kind": by_kind,
        "max_sync_z": round(max(r["sync_z"] for r in rows), 2),
        "z_detect": wm.Z_DETECT,
    }


SECTIONS = {
    "watermark_robustness": section_watermark_robustness,
    "watermark_false_positives": section_watermark_false_positives,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {list(SECTIONS)}")
    ap.add_argument("--videos", type=int, default=50)
    ap.add_argument("--unmarked", type=int, default=200)
    ap.add_argument("--steps", type=int, default=4, help="denoising steps of the generated clips")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", default="", help="folder to keep the generated clips in between runs")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        t0 = time.time()
        result = {"benchmark": name, "machine": machine(), **SECTIONS[name](args)}
        result["seconds"] = round(time.time() - t0, 1)
        (RESULTS / f"safety_{name}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps({k: v for k, v in result.items() if k not in ("attacks", "by_kind", "false_examples")}))


if __name__ == "__main__":
    main()
