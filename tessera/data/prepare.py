"""`tessera prepare`: a folder of videos -> a dataset the DiT trains on.

DATASET/
  manifest.jsonl        one record per clip (and per rejected source file), sorted by id
  summary.json          kept / rejected counts by reason
  prepare.json          the settings of the run (a rerun with other settings is refused)
  vae.safetensors       the VAE the latents were encoded with
  latents/shard_00000.safetensors ...   latents + candidate texts (format of tessera.data.latents)
  latents/text_embeddings.safetensors   text-encoder token embeddings of every candidate text
  work/                 per-stage journals and per-clip latents: what makes a rerun resume

Stages (each a plain function of one item, run over a process pool):
  1. probe    source -> duration, fps, size, codec, bit rate, or a rejection reason
  2. split    source -> shots (PySceneDetect) -> clips within [min, max] seconds
  3. filter   clip -> measured quality values against thresholds (+ unsafe classifier)
  4. caption  clip -> long captions from the title and measured facts (or a local VLM)
  5. encode   clip -> frames at a training shape -> VAE latents; then shards + text embeddings

Every item's result is appended to a journal as soon as it is done, and every output file
is written to a temporary name and renamed, so a run killed at any point (even kill -9)
continues where it stopped when started again. Outputs are sorted by clip id, so a resumed
run writes the same files as an uninterrupted one.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tessera.data.filters import UNSAFE_NOT_CONFIGURED, FilterConfig, measure, unsafe_filter
from tessera.data.ingest import ShotConfig, clip_times, list_sources, probe_video, read_frames, split_source, title_of

STAGES = ("probe", "split", "filter", "caption", "encode")


@dataclass
class PrepareConfig:
    shots: ShotConfig = field(default_factory=ShotConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    captioner_model: str = ""  # local image-to-text transformers folder; "" uses the rule captioner
    long_title_words: int = 10  # titles with this many words are kept as captions
    encode: bool = True  # False stops after captions (no VAE, no shards)
    checkpoint: str = ""  # generation (or VAE-only) checkpoint whose VAE encodes the clips; "" = bundled
    shapes: tuple[str, ...] = ("256x256", "448x256", "256x448")  # training shapes, WIDTHxHEIGHT px
    frames: int = 17  # frames per clip, of the form 1 + 4k
    fps: float = 8.0  # frames are sampled at this rate from the clip start
    clips_per_shard: int = 256


# ----------------------------------------------------------------------------- validation


def parse_shape(s: str) -> tuple[int, int]:
    """`448x256` -> (width_px, height_px); raises ValueError with a fix."""
    try:
        w, h = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise ValueError(f"shape {s!r} is not WIDTHxHEIGHT in pixels, e.g. 448x256") from None
    for name, v in (("width", w), ("height", h)):
        if v <= 0 or v % 32:
            raise ValueError(
                f"shape {s}: {name} {v} px is not a positive multiple of 32; try {max(32, round(v / 32) * 32)}"
            )
    return w, h


def check_config(cfg: PrepareConfig) -> None:
    """Raise ValueError (what was given, what is expected, what to do) for settings that cannot work."""
    if not cfg.shapes:
        raise ValueError("no training shapes given; pass --shapes, e.g. 256x256,448x256,256x448")
    for s in cfg.shapes:
        parse_shape(s)
    if cfg.frames < 1 or (cfg.frames - 1) % 4:
        k = max(1, round((cfg.frames - 1) / 4))
        raise ValueError(
            f"--frames {cfg.frames} is not of the form 1 + 4k (the VAE halves time twice); try {1 + 4 * k}"
        )
    if not 0 < cfg.fps <= 60:
        raise ValueError(f"--fps {cfg.fps} is outside (0, 60]")
    sc = cfg.shots
    if not 0 < sc.min_duration_s:
        raise ValueError(f"--min-s {sc.min_duration_s} must be above 0")
    if sc.max_duration_s < 2 * sc.min_duration_s:
        raise ValueError(
            f"--max-s {sc.max_duration_s} is below twice --min-s {sc.min_duration_s}; long shots could not be cut "
            f"into clips of at least the minimum; try --max-s {2 * sc.min_duration_s:g}"
        )
    span = (cfg.frames - 1) / cfg.fps
    if cfg.encode and sc.min_duration_s < span:
        raise ValueError(
            f"--min-s {sc.min_duration_s} is shorter than the {span:g} s that {cfg.frames} frames at {cfg.fps:g} fps "
            f"span; raise --min-s to {span:g} or lower --frames"
        )
    if cfg.clips_per_shard < 1:
        raise ValueError(f"--clips-per-shard {cfg.clips_per_shard} must be at least 1")


def nearest_shape(width_px: int, height_px: int, shapes: Iterable[str]) -> str:
    """The training shape whose aspect ratio is closest (in log ratio) to the video's; first one on ties."""
    a = math.log(width_px / height_px)
    return min(shapes, key=lambda s: abs(math.log(parse_shape(s)[0] / parse_shape(s)[1]) - a))


# ----------------------------------------------------------------------------- files


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Journal:
    """Results of one stage, one JSON line per finished item; a line cut short by a kill is dropped."""

    def __init__(self, path: Path):
        self.path = path
        self.done: dict[str, dict] = {}
        if path.exists():
            data = path.read_bytes()
            good = data[: data.rfind(b"\n") + 1]  # a kill can leave half a line at the end
            for line in good.decode().splitlines():
                row = json.loads(line)
                self.done[row["key"]] = row["result"]
            if len(good) != len(data):
                with open(path, "r+b") as f:
                    f.truncate(len(good))

    def add(self, key: str, result: dict) -> None:
        self.done[key] = result
        with open(self.path, "a") as f:
            f.write(json.dumps({"key": key, "result": result}, sort_keys=True) + "\n")


def clip_file(clip_id: str) -> str:
    return hashlib.sha1(clip_id.encode()).hexdigest()[:20] + ".safetensors"


# ----------------------------------------------------------------------------- stage functions (one item each)


def _guard(fn: Callable[..., dict], *args) -> dict:
    """Run a stage function; an unexpected error rejects the item instead of stopping the run."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - one bad video must not stop a crawl of millions
        return {"reason": "error", "detail": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"}


def filter_clip(clip: dict, probe: dict, cfg: FilterConfig) -> dict:
    """Stage 3: quality measures and caption facts of one clip."""
    times = clip_times(clip["start_s"], clip["end_s"], cfg.analysis_fps, cfg.analysis_frames)
    frames = read_frames(clip["source"], times)
    luma = read_frames(clip["source"], times, fmt="gray")
    if min(len(frames), len(luma)) < 2:
        return {"reason": "undecodable", "detail": f"only {len(frames)} frame(s) decode in the clip"}
    filters, facts = measure(frames, luma, probe, cfg)
    filters["unsafe"] = unsafe_filter(frames, cfg)
    facts.update(
        duration_s=round(clip["end_s"] - clip["start_s"], 3), width_px=probe["width_px"], height_px=probe["height_px"]
    )
    return {"filters": filters, "facts": facts}


def caption_clip(clip: dict, facts: dict, model_path: str, long_title_words: int, fps: float) -> dict:
    """Stage 4: title and long captions of one clip."""
    from tessera.data.recaption import clip_texts, get_captioner

    captioner = get_captioner(model_path)
    frames = None
    if model_path:
        frames = read_frames(clip["source"], clip_times(clip["start_s"], clip["end_s"], fps, 64))
    return clip_texts(captioner, frames, title_of(clip["source"]), facts, clip["id"], long_title_words)


def clip_pixels(clip: dict, shape: str, frames: int, fps: float) -> np.ndarray:
    """Frames of a clip at a training shape: sampled at `fps`, scaled to cover, centre-cropped; (T, H, W, 3)."""
    import cv2

    w, h = parse_shape(shape)
    x = read_frames(clip["source"], clip_times(clip["start_s"], clip["end_s"], fps, frames))
    if len(x) == 0:
        raise ValueError(f"no frame of {clip['id']} decodes")
    if len(x) < frames:  # the last frame is held when the clip ends a fraction of a frame early
        x = np.concatenate([x, np.repeat(x[-1:], frames - len(x), axis=0)])
    fh, fw = x.shape[1:3]
    s = max(w / fw, h / fh)
    size = (max(w, round(fw * s)), max(h, round(fh * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    y0, x0 = (size[1] - h) // 2, (size[0] - w) // 2
    return np.stack([cv2.resize(f, size, interpolation=interp)[y0 : y0 + h, x0 : x0 + w] for f in x])


_VAES: dict[str, object] = {}


def encode_clip(clip: dict, shape: str, frames: int, fps: float, vae_path: str, out_file: str) -> dict:
    """Stage 5: VAE latents of one clip, written to `out_file` (C, T', H', W') bf16."""
    import torch

    from tessera import checkpoint
    from tessera.data.dataset import frames_to_tensor
    from tessera.train import load_vae

    if vae_path not in _VAES:  # one VAE per worker process
        _VAES[vae_path] = load_vae(vae_path)
    vae = _VAES[vae_path]
    x = frames_to_tensor(clip_pixels(clip, shape, frames, fps))[None]  # (1, 3, T, H, W)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        z = vae.encode(x).to(torch.bfloat16)[0]  # (C, T', H', W')
    checkpoint.save(out_file, {"latent": z}, {"id": clip["id"], "shape": shape})
    return {"file": Path(out_file).name}


def _init_worker() -> None:
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


# ----------------------------------------------------------------------------- the run


class Runner:
    """Runs a stage function over items, in this process or a process pool, journalling each result."""

    def __init__(self, workers: int, progress: bool):
        self.workers, self.progress = workers, progress
        self.pool: cf.ProcessPoolExecutor | None = None
        self.timings: dict[str, dict] = {}  # stage -> items run now and seconds (not written: a resume differs)

    def __enter__(self) -> Runner:
        if self.workers > 1:
            ctx = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started threads
            self.pool = cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker)
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def run(self, desc: str, journal: Journal | None, items: list[tuple[str, Callable, tuple]]) -> dict[str, dict]:
        from tqdm import tqdm

        t0 = time.perf_counter()
        done = dict(journal.done) if journal else {}
        todo = [(k, fn, args) for k, fn, args in items if k not in done]
        bar = tqdm(
            total=len(items), initial=len(items) - len(todo), desc=desc, disable=not self.progress, file=sys.stderr
        )

        def finish(key: str, result: dict) -> None:
            done[key] = result
            if journal:
                journal.add(key, result)
            bar.update(1)

        if self.pool is None:
            for key, fn, args in todo:
                finish(key, _guard(fn, *args))
        else:
            futures = {self.pool.submit(_guard, fn, *args): key for key, fn, args in todo}
            for fut in cf.as_completed(futures):
                finish(futures[fut], fut.result())
        bar.close()
        self.timings[desc] = {"items": len(todo), "seconds": round(time.perf_counter() - t0, 3)}
        return done


def settings_of(cfg: PrepareConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))


def _claim_dataset(out: Path, cfg: PrepareConfig) -> None:
    """Record the run's settings; refuse to resume a dataset made with other settings."""
    path = out / "prepare.json"
    want = settings_of(cfg)
    if path.exists():
        have = json.loads(path.read_text())
        if have != want:
            diff = [k for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)]
            raise ValueError(
                f"{out} was prepared with other settings ({', '.join(diff)} differ); "
                "use a new --out, or delete the folder to start again"
            )
    else:
        write_atomic(path, json.dumps(want, indent=1, sort_keys=True) + "\n")


def vae_only_file(checkpoint_path: str, out: Path) -> Path:
    """Write the VAE of a generation (or VAE-only) checkpoint to `out` as a VAE-only file; returns its path."""
    from tessera import checkpoint
    from tessera.pipeline import bundled_checkpoint

    src = Path(checkpoint_path) if checkpoint_path else bundled_checkpoint()
    tensors, config, meta = checkpoint.load(src)
    kind = meta.get("kind")
    if kind == "generator":
        tensors, config = checkpoint.split_prefix(tensors, "vae"), config["vae"]
    elif kind != "vae":
        raise checkpoint.CheckpointError(f"{src} is a {kind!r} checkpoint; pass a generation or VAE checkpoint")
    if not out.exists():
        checkpoint.save(out, tensors, config, kind="vae", source=src.name)
    return out


def prepare(src: str | Path, out: str | Path, cfg: PrepareConfig, workers: int = 1, progress: bool = True) -> dict:
    """Run every stage over the videos named by `src` into the dataset folder `out`; returns the summary."""
    check_config(cfg)
    out = Path(out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    _claim_dataset(out, cfg)
    for folder in (out, out / "latents", work / "latents"):  # temporaries of a run that was killed
        for tmp in folder.glob("*.tmp") if folder.is_dir() else ():
            tmp.unlink()
    sources = [str(p) for p in list_sources(src)]

    with Runner(workers, progress) as runner:
        # 1. probe
        probes = runner.run("probe", Journal(work / "probe.jsonl"), [(s, probe_video, (s,)) for s in sources])
        good = [s for s in sources if "reason" not in probes[s]]

        # 2. shots -> clips
        splits = runner.run(
            "split", Journal(work / "split.jsonl"), [(s, split_source, (s, probes[s], cfg.shots)) for s in good]
        )
        records: dict[str, dict] = {}
        for s in sources:
            p, sp = probes[s], splits.get(s, {})
            if "reason" in p or "reason" in sp:
                bad = p if "reason" in p else sp
                records[s] = {"id": s, "source": s, "status": "rejected", "reasons": [bad["reason"]], **bad}
                records[s].pop("reason")
                continue
            for c in sp["clips"]:
                records[c["id"]] = {"id": c["id"], "source": s, "probe": p, **c}

        # 3. quality filters
        todo = [r for r in records.values() if "probe" in r and not r["reasons"]]
        measured = runner.run(
            "filter",
            Journal(work / "filter.jsonl"),
            [(r["id"], filter_clip, (r, r["probe"], cfg.filters)) for r in todo],
        )
        for r in todo:
            m = measured[r["id"]]
            if "reason" in m:
                r["reasons"] = [m["reason"]]
                r["detail"] = m["detail"]
                continue
            r["filters"].update(m["filters"])
            r["facts"] = m["facts"]
            r["reasons"] = [k for k, v in r["filters"].items() if not v["pass"]]

        # 4. captions for the clips that passed
        kept = sorted((r for r in records.values() if "probe" in r and not r["reasons"]), key=lambda r: r["id"])
        caps = runner.run(
            "caption",
            Journal(work / "caption.jsonl"),
            [
                (r["id"], caption_clip, (r, r["facts"], cfg.captioner_model, cfg.long_title_words, cfg.fps))
                for r in kept
            ],
        )
        for r in list(kept):
            c = caps[r["id"]]
            if "reason" in c:
                r["reasons"], r["detail"] = [c["reason"]], c["detail"]
                kept.remove(r)
            else:
                r.update(c)

        # 5. latents and text embeddings
        if cfg.encode:
            kept = _encode(runner, out, cfg, kept)

    for r in records.values():
        r["status"] = "kept" if not r["reasons"] else "rejected"
    write_manifest(out / "manifest.jsonl", records.values())
    summary = summarise(records.values(), cfg)
    write_atomic(out / "summary.json", json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return {**summary, "stage_timings": runner.timings}


def _encode(runner: Runner, out: Path, cfg: PrepareConfig, kept: list[dict]) -> list[dict]:
    import torch

    from tessera import checkpoint

    vae_path = vae_only_file(cfg.checkpoint, out / "vae.safetensors")
    lat_dir, clip_dir = out / "latents", out / "work" / "latents"
    lat_dir.mkdir(exist_ok=True)
    clip_dir.mkdir(parents=True, exist_ok=True)

    # a fixed plan: shapes in the given order, clips by id, `clips_per_shard` per shard
    by_shape: dict[str, list[dict]] = {s: [] for s in cfg.shapes}
    for r in kept:
        r["shape"] = nearest_shape(r["probe"]["width_px"], r["probe"]["height_px"], cfg.shapes)
        by_shape[r["shape"]].append(r)
    shards: list[tuple[Path, str, list[dict]]] = []
    for shape, rs in by_shape.items():
        for i in range(0, len(rs), cfg.clips_per_shard):
            shards.append((lat_dir / f"shard_{len(shards):05d}.safetensors", shape, rs[i : i + cfg.clips_per_shard]))
    for path, _, rs in shards:
        for j, r in enumerate(rs):
            r["shard"], r["index"] = path.name, j

    # per-clip latents for shards not yet written
    todo = [
        r for path, _, rs in shards if not path.exists() for r in rs if not (clip_dir / clip_file(r["id"])).exists()
    ]
    runner.run(
        "encode",
        None,
        [
            (
                r["id"],
                encode_clip,
                (r, r["shape"], cfg.frames, cfg.fps, str(vae_path), str(clip_dir / clip_file(r["id"]))),
            )
            for r in todo
        ],
    )
    failed = [r for r in todo if not (clip_dir / clip_file(r["id"])).exists()]
    if failed:
        raise RuntimeError(f"{len(failed)} clip(s) could not be encoded, first {failed[0]['id']}; rerun to retry")

    # shards, each one shape, written atomically; per-clip files removed once their shard exists
    t0 = time.perf_counter()
    for path, shape, rs in shards:
        w, h = parse_shape(shape)
        if not path.exists():
            z = [checkpoint.load(clip_dir / clip_file(r["id"]))[0]["latent"] for r in rs]
            meta = {"frames": cfg.frames, "height_px": h, "width_px": w, "fps": cfg.fps, "clips": len(rs)}
            texts = json.dumps([r["texts"] for r in rs])
            checkpoint.save(path, {"latents": torch.stack(z)}, meta, texts=texts)
        for r in rs:
            (clip_dir / clip_file(r["id"])).unlink(missing_ok=True)
    runner.timings["shards"] = {"items": len(shards), "seconds": round(time.perf_counter() - t0, 3)}
    t0 = time.perf_counter()
    write_text_embeddings(lat_dir / "text_embeddings.safetensors", [t for r in kept for t in r["texts"]])
    runner.timings["text"] = {
        "items": len({t for r in kept for t in r["texts"]}),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return kept


def write_text_embeddings(path: Path, texts: list[str]) -> None:
    """Token embeddings of every distinct text with the default text encoder (MiniLM), bf16, plus masks."""
    import torch

    from tessera import checkpoint
    from tessera.config import TextConfig
    from tessera.models.text import TextEncoder

    if path.exists():
        return
    texts = sorted(set(texts))
    cfg = TextConfig()
    if texts:
        e = TextEncoder(cfg)(texts)
        tokens, mask = e.tokens.to(torch.bfloat16), e.mask
    else:
        tokens, mask = (
            torch.zeros(0, cfg.max_tokens, 384, dtype=torch.bfloat16),
            torch.zeros(0, cfg.max_tokens, dtype=torch.bool),
        )
    checkpoint.save(path, {"tokens": tokens, "mask": mask}, asdict(cfg), texts=json.dumps(texts))


def write_manifest(path: Path, records: Iterable[dict]) -> None:
    rows = sorted(records, key=lambda r: r["id"])
    write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_manifest(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


# ----------------------------------------------------------------------------- summary


def summarise(records: Iterable[dict], cfg: PrepareConfig) -> dict:
    records = list(records)
    kept = [r for r in records if r["status"] == "kept"]
    reasons = Counter(reason for r in records for reason in r["reasons"])
    return {
        "sources": len({r["source"] for r in records}),
        "records": len(records),
        "kept": len(kept),
        "rejected": len(records) - len(kept),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "kept_seconds": round(sum(r["end_s"] - r["start_s"] for r in kept), 1),
        "shapes": dict(sorted(Counter(r.get("shape", "-") for r in kept).items())) if cfg.encode else {},
        "unsafe_filter": "configured" if cfg.filters.unsafe_model else UNSAFE_NOT_CONFIGURED,
    }


def summary_table(summary: dict) -> str:
    """The summary as a small text table for the terminal."""
    rows = [("kept", summary["kept"])]
    rows += [(f"rejected: {k}", v) for k, v in summary["rejected_by_reason"].items()]
    rows.append(("rejected (total records)", summary["rejected"]))
    width = max(len(k) for k, _ in rows)
    lines = [f"{'outcome'.ljust(width)}  clips", f"{'-' * width}  -----"]
    lines += [f"{k.ljust(width)}  {v:5d}" for k, v in rows]
    lines.append(f"{summary['sources']} source files, {summary['kept_seconds']} s kept; {summary['unsafe_filter']}")
    if summary["shapes"]:
        lines.append("shapes: " + ", ".join(f"{k} x{v}" for k, v in summary["shapes"].items()))
    return "\n".join(lines)
