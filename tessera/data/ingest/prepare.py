"""`tessera prepare`: a folder of videos -> a dataset the DiT trains on.

DATASET/
  manifest.jsonl        one record per clip (and per rejected source file), sorted by id
  summary.json          kept / rejected counts by reason
  prepare.json          the settings of the run (a rerun with other settings is refused)
  vae.safetensors       the VAE the latents were encoded with
  latents/shard_00000.safetensors ...   latents + candidate texts (format of tessera.data.shards)
  work/                 per-stage journals and per-clip latents: what makes a rerun resume

Stages (each a plain function of one item, run over a process pool):
  1. probe    source -> duration, fps, size, codec, bit rate, or a rejection reason   (probe.py)
  2. split    source -> shots (PySceneDetect) -> clips within [min, max] seconds      (shots.py)
  3. filter   clip -> measured quality values against thresholds (+ unsafe classifier) (filters.py)
  4. caption  clip -> long captions from the title and measured facts (or a local VLM)  (recaption.py)
  5. encode   clip -> frames at a training shape -> VAE latents; then shards            (encode.py)

Every item's result is appended to a journal as soon as it is done, and every output file
is written to a temporary name and renamed, so a run killed at any point (even kill -9)
continues where it stopped when started again. Outputs are sorted by clip id, so a resumed
run writes the same files as an uninterrupted one. A bad input file never stops the run:
it becomes a rejected record with its reason. The run deletes only files it made, by
their own names, in its own folders; anything else in DATASET is left alone.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tessera import checkpoint
from tessera.data.ingest.encode import check_shape, copy_vae, encode_clip, geometry_of, nearest_shape, shard_meta
from tessera.data.ingest.filters import UNSAFE_NOT_CONFIGURED, FilterConfig, filter_clip
from tessera.data.ingest.probe import probe_video
from tessera.data.ingest.recaption import caption_clip
from tessera.data.ingest.record import ClipRecord
from tessera.data.ingest.shots import ShotConfig, split_source
from tessera.data.ingest.sources import source_names
from tessera.data.shards import shard_name, write_shard
from tessera.errors import InputError
from tessera.geometry import Geometry
from tessera.run_folder import claim, write_atomic

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
    frames: int = 17  # frames per clip: 1 + k × the VAE's temporal factor
    fps: float = 8.0  # frames are sampled at this rate from the clip start
    clips_per_shard: int = 256


# ----------------------------------------------------------------------------- validation


def check_config(cfg: PrepareConfig) -> Geometry | None:
    """Raise ValueError (what was given, what is expected, what to do) for settings that cannot work.

    When encoding, the shapes and frame count are checked against the checkpoint's VAE and
    DiT patch, and the geometry is returned.
    """
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
    if cfg.clips_per_shard < 1:
        raise ValueError(f"--clips-per-shard {cfg.clips_per_shard} must be at least 1")
    if not cfg.encode:
        return None
    span = (cfg.frames - 1) / cfg.fps
    if sc.min_duration_s < span:
        raise ValueError(
            f"--min-s {sc.min_duration_s} is shorter than the {span:g} s that {cfg.frames} frames at {cfg.fps:g} fps "
            f"span; raise --min-s to {span:g} or lower --frames"
        )
    if not cfg.shapes:
        raise ValueError("no training shapes given; pass --shapes, e.g. 256x256,448x256,256x448")
    geometry = geometry_of(cfg.checkpoint)
    try:
        geometry.check_frames(cfg.frames)
    except InputError as e:
        raise InputError(f"--frames: {e}") from None
    for s in cfg.shapes:
        check_shape(geometry, s)
    return geometry


# ----------------------------------------------------------------------------- files


# the temporaries a killed run can leave: (folder under DATASET, their names)
OWN_TEMPORARIES = (
    ("", re.compile(r"(manifest\.jsonl|summary\.json|prepare\.json|vae\.safetensors)\.tmp")),
    ("latents", re.compile(r"shard_\d{5}\.safetensors\.tmp")),
    ("work/latents", re.compile(r"[0-9a-f]{20}\.safetensors\.tmp")),
)


def remove_own_temporaries(out: Path) -> list[Path]:
    """Delete the temporary files a killed run left, and nothing else (a user's `notes.tmp` stays); returns them."""
    removed = []
    for sub, name in OWN_TEMPORARIES:
        folder = out / sub
        if not folder.is_dir() or folder.is_symlink():
            continue
        for p in sorted(folder.iterdir()):
            if name.fullmatch(p.name) and p.is_file() and not p.is_symlink():
                p.unlink()
                removed.append(p)
    return removed


class Journal:
    """Results of one stage, one JSON line per finished item; a line cut short by a kill is dropped."""

    def __init__(self, path: Path):
        self.path = path
        self.done: dict[str, dict] = {}
        if path.exists():
            data = path.read_bytes()
            good = data[: data.rfind(b"\n") + 1]  # a kill can leave half a line at the end
            for n, line in enumerate(good.decode(errors="replace").splitlines(), 1):
                try:
                    row = json.loads(line)
                    self.done[row["key"]] = row["result"]
                except (ValueError, KeyError, TypeError):
                    raise InputError(
                        f"{path} line {n} is not a journal line; the work folder is damaged: delete {path} "
                        "to redo that stage"
                    ) from None
            if len(good) != len(data):
                with open(path, "r+b") as f:
                    f.truncate(len(good))

    def add(self, key: str, result: dict) -> None:
        self.done[key] = result
        with open(self.path, "a") as f:
            f.write(json.dumps({"key": key, "result": result}, sort_keys=True) + "\n")


def clip_file(clip_id: str) -> str:
    return hashlib.sha1(clip_id.encode()).hexdigest()[:20] + ".safetensors"


def write_manifest(path: Path, records: Iterable[ClipRecord]) -> None:
    rows = sorted(records, key=lambda r: r.id)
    write_atomic(path, "".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in rows))


def read_manifest(path: str | Path) -> list[dict]:
    """The manifest's lines as dicts (the file format)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


def read_records(path: str | Path) -> list[ClipRecord]:
    """The manifest as typed records."""
    return [ClipRecord.from_dict(r) for r in read_manifest(path)]


# ----------------------------------------------------------------------------- running stage functions


def _guard(fn: Callable[..., dict], *args) -> dict:
    """Run a stage function; an unexpected error rejects the item instead of stopping the run."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - one bad video must not stop a crawl of millions
        return {"reason": "error", "detail": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"}


CRASHED = {"reason": "crashed", "detail": "it killed the worker process working on it (a decoder crash)"}


def _init_worker() -> None:
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


class Runner:
    """Runs a stage function over items, in this process or a process pool, journalling each result.

    The executor is the only part a subclass changes (`tessera.data.ingest.ray_runner.RayRunner`
    runs the items as Ray tasks): `run` keeps the journal, progress bar and timings in the
    driver, so every executor resumes from the same journals and writes the same files.
    """

    encode_device = "cpu"  # where encode_clip runs its VAE; a runner with GPUs sets "cuda"

    def __init__(self, workers: int, progress: bool):
        self.workers, self.progress = workers, progress
        self.pool: cf.ProcessPoolExecutor | None = None
        self.timings: dict[str, dict] = {}  # stage -> items run now and seconds (not written: a resume differs)

    def __enter__(self) -> Runner:
        if self.workers > 1:
            self._new_pool()
        return self

    def _new_pool(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        ctx = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started threads
        self.pool = cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker)

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def run(
        self, desc: str, journal: Journal, items: list[tuple[str, Callable, tuple]], gpu: bool = False
    ) -> dict[str, dict]:
        """Results by key of `items` (key, stage function, arguments); those in the journal are not run again.

        `gpu` marks a stage that uses `encode_device`: a runner with GPUs gives its tasks one."""
        from tqdm import tqdm

        t0 = time.perf_counter()
        done = dict(journal.done)
        todo = [(k, fn, args) for k, fn, args in items if k not in done]
        bar = tqdm(
            total=len(items), initial=len(items) - len(todo), desc=desc, disable=not self.progress, file=sys.stderr
        )

        def finish(key: str, result: dict) -> None:
            done[key] = result
            journal.add(key, result)
            bar.update(1)

        self._execute(desc, todo, finish, gpu)
        bar.close()
        self.timings[desc] = {"items": len(todo), "seconds": round(time.perf_counter() - t0, 3)}
        return done

    def _execute(
        self, desc: str, todo: list[tuple[str, Callable, tuple]], finish: Callable[[str, dict], None], gpu: bool
    ) -> None:
        """Run every item of `todo` (of stage `desc`) and call `finish(key, result)` for each as it completes."""
        if self.pool is None:
            for key, fn, args in todo:
                finish(key, _guard(fn, *args))
        else:
            self._run_pool(todo, finish)

    def _run_pool(self, todo: list[tuple[str, Callable, tuple]], finish: Callable[[str, dict], None]) -> None:
        """Run `todo` on the pool. A worker killed by an item (a decoder crash) breaks the pool and every item
        in it; the unfinished items then run alone until the one that kills its worker again is found and
        rejected, and the rest go back to the pool."""
        while todo:
            futures = {self.pool.submit(_guard, fn, *args): i for i, (_, fn, args) in enumerate(todo)}
            broken = []
            for fut in cf.as_completed(futures):
                i = futures[fut]
                try:
                    finish(todo[i][0], fut.result())
                except BrokenProcessPool:
                    broken.append(i)
            todo = self._isolate([todo[i] for i in sorted(broken)], finish) if broken else []

    def _isolate(self, todo: list[tuple[str, Callable, tuple]], finish: Callable[[str, dict], None]) -> list:
        """Run the first items of `todo` one at a time on a fresh pool until one kills its worker; returns the rest."""
        limit = 2 * self.workers + 2  # the item that broke the pool was among the first ones sent to it
        self._new_pool()
        for n, (key, fn, args) in enumerate(todo[:limit]):
            try:
                finish(key, self.pool.submit(_guard, fn, *args).result())
            except BrokenProcessPool:
                finish(key, dict(CRASHED))
                self._new_pool()
                return todo[n + 1 :]
        return todo[limit:]


# ----------------------------------------------------------------------------- the run


def settings_of(cfg: PrepareConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))


def _open_dataset(out: Path, cfg: PrepareConfig) -> Path:
    """Create DATASET/work, record the run's settings (or refuse other ones), remove our own temporaries."""
    work = out / "work"
    try:
        work.mkdir(parents=True, exist_ok=True)
        (work / "latents").mkdir(exist_ok=True)
    except OSError as e:
        raise InputError(
            f"--out {out}: cannot create the dataset folder ({e.strerror or e}); pass a folder you can write to"
        ) from e
    claim(out, "prepare.json", settings_of(cfg))
    remove_own_temporaries(out)
    return work


def prepare(
    src: str | Path,
    out: str | Path,
    cfg: PrepareConfig,
    workers: int = 1,
    progress: bool = True,
    runner: Runner | None = None,
) -> dict:
    """Run every stage over the videos named by `src` into the dataset folder `out`; returns the summary.

    `src` is a local folder, glob, list file or video, or an fsspec URL of one (`s3://bucket/videos/`).
    The stages run on `runner` (entered here), by default a process pool of `workers`."""
    check_config(cfg)
    out = Path(out).absolute()  # stage functions get paths in it; a Ray worker's working folder is not ours
    sources = source_names(src)
    work = _open_dataset(out, cfg)
    with runner or Runner(workers, progress) as runner:
        records = _probe_and_split(runner, work, sources, cfg)  # 1, 2
        _filter(runner, work, records, cfg)  # 3
        kept = _caption(runner, work, records, cfg)  # 4
        if cfg.encode:
            _encode(runner, out, cfg, kept)  # 5
    write_manifest(out / "manifest.jsonl", records.values())
    summary = summarise(records.values(), cfg)
    write_atomic(out / "summary.json", json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return {**summary, "stage_timings": runner.timings}


def _probe_and_split(runner: Runner, work: Path, sources: list[str], cfg: PrepareConfig) -> dict[str, ClipRecord]:
    """Stages 1 and 2: a record per clip, and one per source rejected whole."""
    probes = runner.run("probe", Journal(work / "probe.jsonl"), [(s, probe_video, (s,)) for s in sources])
    good = [s for s in sources if "reason" not in probes[s]]
    splits = runner.run(
        "split", Journal(work / "split.jsonl"), [(s, split_source, (s, probes[s], cfg.shots)) for s in good]
    )
    records: dict[str, ClipRecord] = {}
    for s in sources:
        bad = next((r for r in (probes[s], splits.get(s, {})) if "reason" in r), None)
        if bad is not None:
            records[s] = ClipRecord.rejected_source(s, bad)
            continue
        for c in splits[s]["clips"]:
            records[c["id"]] = ClipRecord.from_split(s, probes[s], c)
    return records


def _filter(runner: Runner, work: Path, records: dict[str, ClipRecord], cfg: PrepareConfig) -> None:
    """Stage 3: quality filters of every clip not yet rejected."""
    todo = [r for r in records.values() if r.probe is not None and r.kept]
    measured = runner.run(
        "filter", Journal(work / "filter.jsonl"), [(r.id, filter_clip, (r, cfg.filters)) for r in todo]
    )
    for r in todo:
        r.add_filters(measured[r.id])


def _caption(runner: Runner, work: Path, records: dict[str, ClipRecord], cfg: PrepareConfig) -> list[ClipRecord]:
    """Stage 4: captions for the clips that passed; returns the clips still kept, by id."""
    kept = sorted((r for r in records.values() if r.probe is not None and r.kept), key=lambda r: r.id)
    args = (cfg.captioner_model, cfg.long_title_words, cfg.fps)
    caps = runner.run("caption", Journal(work / "caption.jsonl"), [(r.id, caption_clip, (r, *args)) for r in kept])
    for r in kept:
        r.add_captions(caps[r.id])
    return [r for r in kept if r.kept]


def _encode(runner: Runner, out: Path, cfg: PrepareConfig, kept: list[ClipRecord]) -> None:
    """Stage 5: per-clip latents, then shards of one shape each; a clip that fails to encode is rejected."""
    vae_path = copy_vae(cfg.checkpoint, out / "vae.safetensors")
    lat_dir, clip_dir = out / "latents", out / "work" / "latents"
    lat_dir.mkdir(exist_ok=True)
    for r in kept:
        r.shape = nearest_shape(r.probe.width_px, r.probe.height_px, cfg.shapes)
    dev = runner.encode_device
    items = [
        (r.id, encode_clip, (r, cfg.frames, cfg.fps, str(vae_path), str(clip_dir / clip_file(r.id)), dev)) for r in kept
    ]
    encoded = runner.run("encode", Journal(out / "work" / "encode.jsonl"), items, gpu=True)
    for r in kept:
        if "reason" in encoded[r.id]:
            r.reject(encoded[r.id])
    t0 = time.perf_counter()
    shards = plan_shards([r for r in kept if r.kept], cfg)
    for path, shape, rs in shards:
        _write_shard(lat_dir / path, shape, rs, clip_dir, cfg)
    runner.timings["shards"] = {"items": len(shards), "seconds": round(time.perf_counter() - t0, 3)}


def plan_shards(kept: list[ClipRecord], cfg: PrepareConfig) -> list[tuple[str, str, list[ClipRecord]]]:
    """A fixed plan: shapes in the given order, clips by id, `clips_per_shard` per shard; sets shard and index."""
    by_shape: dict[str, list[ClipRecord]] = {s: [] for s in cfg.shapes}
    for r in kept:
        by_shape[r.shape].append(r)
    shards = []
    for shape, rs in by_shape.items():
        for i in range(0, len(rs), cfg.clips_per_shard):
            shards.append((shard_name(len(shards)), shape, rs[i : i + cfg.clips_per_shard]))
    for name, _, rs in shards:
        for j, r in enumerate(rs):
            r.shard, r.index = name, j
    return shards


def _write_shard(path: Path, shape: str, rs: list[ClipRecord], clip_dir: Path, cfg: PrepareConfig) -> None:
    """One shard from its clips' latent files, unless it exists; then the per-clip files are removed."""
    if not path.exists():
        missing = [r.id for r in rs if not (clip_dir / clip_file(r.id)).is_file()]
        if missing:
            raise InputError(
                f"the latents of {missing[0]} are missing from {clip_dir}; delete {clip_dir.parent / 'encode.jsonl'} "
                "and rerun to encode them again"
            )
        z = [checkpoint.load(clip_dir / clip_file(r.id))[0]["latent"] for r in rs]
        write_shard(path, torch.stack(z), [r.texts for r in rs], shard_meta(cfg.frames, cfg.fps, shape, len(rs)))
    for r in rs:
        (clip_dir / clip_file(r.id)).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- summary


def summarise(records: Iterable[ClipRecord], cfg: PrepareConfig) -> dict:
    records = list(records)
    kept = [r for r in records if r.kept]
    reasons = Counter(reason for r in records for reason in r.reasons)
    return {
        "sources": len({r.source for r in records}),
        "records": len(records),
        "kept": len(kept),
        "rejected": len(records) - len(kept),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "kept_seconds": round(sum(r.duration_s for r in kept), 1),
        "shapes": dict(sorted(Counter(r.shape or "-" for r in kept).items())) if cfg.encode else {},
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
