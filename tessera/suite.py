"""`tessera eval --suite`: every quality measure of a model in one run, one JSON file, one Markdown table, PNGs.

Parts, each with the generation settings of `SuiteConfig` (seeds fixed, so a re-run gives the same numbers):
* template: `eval_cases` prompts, adherence per attribute (tessera.eval), and on the same clips the
  temporal measures (tessera.temporal), beside the same measures on the world's own renders of
  those prompts (the ceiling of the judge);
* paraphrase: the paraphrase set with the prompt enhancer on, and (fewer prompts) off;
* two-object: both colours visible, background, each object's shape and motion;
* sweep: adherence on a subset of the template prompts (every `sweep_every`-th, same seeds)
  against steps for each solver and against guidance; points equal to the main setting are
  taken from the template part; plotted to PNG;
* vae: PSNR / SSIM of encode -> decode on world clips rendered here (seed 4242, shapes and photo
  pans), and the decode time per clip;
* time: seconds per generated clip in the template part (batched: denoise and decode) and one
  clip alone through the whole path (mark and record included).

Clips are judged as decoded, before the invisible mark (the pipeline's "latent" output, then its
decode): the mark carries a new generation id each time and would change the pixels of a re-run
by a few levels. So a re-run with the same settings gives the same numbers (but the seconds).

Noise: every rate carries a 95% interval over prompts, the Wilson interval for yes/no
measures (adherence) and a percentile bootstrap (`bootstrap` resamples, fixed seed) for
continuous ones (temporal scores, PSNR, SSIM). `repeat` > 1 runs the template adherence again
with seeds offset by 1000·k and reports each attribute's difference from the first run, and
whether it lies within the combined half-widths sqrt(h1² + h2²) of the two runs' intervals.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tessera.eval import (
    ATTRIBUTES,
    PromptCase,
    adherence,
    both_right,
    correct,
    eval_cases,
    paraphrase_cases,
    read_eval_set,
)
from tessera.eval import two_object as run_two_object

log = logging.getLogger(__name__)
Progress = Callable[[str], Callable[[int, int], None]]  # label -> update(done, total)
VAE_SEED = 4242  # world clips never drawn in training (training used seed 0)
TEMPORAL = ("colour", "size", "identity", "flicker", "smoothness")


@dataclass
class SuiteConfig:
    """Sizes and settings of a suite run; None takes the model's default (size, duration, guidance)."""

    templates: int = 120
    paraphrase: int = 60
    paraphrase_no_enhance: int = 30
    two_object: int = 60
    sweep_every: int = 5  # sweep subset: template prompts 0, k, 2k, ... (24 of 120)
    scheduler: str = "dpm++2m"
    steps: int = 12
    guidance: float | None = None
    sweep_steps: tuple[tuple[str, int], ...] = (
        ("euler", 4), ("euler", 6), ("euler", 12), ("dpm++2m", 4), ("dpm++2m", 6), ("dpm++2m", 12),
    )  # fmt: skip
    sweep_guidance: tuple[float, ...] = (2.0, 4.0, 6.0)
    vae_clips: int = 8  # per kind (shapes, pans)
    timing_runs: int = 3
    width_px: int | None = None
    height_px: int | None = None
    duration_s: float | None = None
    batch: int = 8
    seed: int = 1234  # draws the template prompts
    repeat: int = 1
    bootstrap: int = 1000
    int8: bool = False


QUICK = SuiteConfig(
    templates=4, paraphrase=2, paraphrase_no_enhance=2, two_object=2, sweep_every=2, steps=2,
    sweep_steps=(("euler", 1), ("euler", 2), ("dpm++2m", 1), ("dpm++2m", 2)), sweep_guidance=(1.0, 4.0),
    vae_clips=1, timing_runs=1, width_px=128, height_px=128, duration_s=0.5, batch=4,
)  # fmt: skip


# ----------------------------------------------------------------------------- noise


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate k / n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap(values: np.ndarray, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of `values` (N,), resampling prompts with a fixed seed."""
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)  # (resamples,)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def estimate(values: list, resamples: int = 1000, binary: bool = False) -> dict:
    """Mean of per-prompt values (None and NaN left out) with its 95% interval: Wilson for yes/no, else bootstrap."""
    v = np.array([float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))])
    if len(v) == 0:
        return {"value": None, "ci95": [None, None], "n": 0}
    lo, hi = wilson(int(v.sum()), len(v)) if binary else bootstrap(v, resamples)
    return {
        "value": float(v.mean()),
        "ci95": [lo, hi],
        "n": int(len(v)),
        "interval": "wilson" if binary else "bootstrap",
    }


def agree(a: dict, b: dict) -> dict:
    """Difference of two runs' estimates and whether it lies within their combined 95% half-widths."""
    half = math.hypot((a["ci95"][1] - a["ci95"][0]) / 2, (b["ci95"][1] - b["ci95"][0]) / 2)
    diff = b["value"] - a["value"]
    return {"first": a["value"], "second": b["value"], "difference": diff, "noise": half, "within": abs(diff) <= half}


# ----------------------------------------------------------------------------- the runner


class Suite:
    """Runs the parts of the suite on one pipeline; `run()` returns the result dict (see the module doc)."""

    def __init__(self, pipe, cfg: SuiteConfig, progress: Progress | None = None):
        self.pipe, self.cfg = pipe, cfg
        self.progress = progress or (lambda label: lambda done, total: None)
        self.guidance = cfg.guidance if cfg.guidance is not None else pipe.sampling["guidance"]
        self.result: dict = {}
        self.timer = {"seconds": 0.0, "clips": 0}

    def settings(self, **over) -> dict:
        s = dict(
            scheduler=self.cfg.scheduler, num_inference_steps=self.cfg.steps, guidance_scale=self.guidance,
            width=self.cfg.width_px, height=self.cfg.height_px, duration_s=self.cfg.duration_s, enhance=True,
        )  # fmt: skip
        return s | over

    def generator(
        self, on_clip: Callable[[int, np.ndarray], None] | None = None, **over
    ) -> Callable[[list[str], list[int]], list[np.ndarray]]:
        """A generate(prompts, seeds) -> frames for tessera.eval, timed into self.timer; on_clip(seed, frames) for each clip."""
        settings = self.settings(**over)
        self.timer = {"seconds": 0.0, "clips": 0}

        def gen(prompts: list[str], seeds: list[int]) -> list[np.ndarray]:
            t0 = time.perf_counter()
            outs = self.pipe(list(prompts), seed=list(seeds), output_type="latent", **settings)
            with torch.no_grad():  # the frames before the mark, so a re-run gives the same pixels
                videos = self.pipe._decode(torch.stack([o.latents for o in outs]).to(self.pipe.device))
            self.timer["seconds"] += time.perf_counter() - t0
            self.timer["clips"] += len(outs)
            for seed, frames in zip(seeds, videos):
                if on_clip:
                    on_clip(seed, frames)
            return videos

        return gen

    # ------------------------------------------------------------------ adherence parts

    def rates(self, cases: list[PromptCase], analyses: list) -> dict:
        """Each attribute's rate over the cases with its 95% interval."""
        marks = [correct(c, a) for c, a in zip(cases, analyses)]
        return {k: estimate([m[k] for m in marks], binary=True) for k in ATTRIBUTES}

    def template(self) -> tuple[list[PromptCase], list]:
        """Adherence of the template prompts, and the temporal measures of the same clips and of the world's renders."""
        from tessera.temporal import temporal_measures

        cases = eval_cases(self.cfg.templates, seed=self.cfg.seed)
        measured: dict[int, dict] = {}

        def on_clip(seed: int, frames: np.ndarray) -> None:
            measured[seed] = temporal_measures(frames, cases[seed].motion)

        _, analyses = adherence(self.generator(on_clip), cases, self.cfg.batch, self.progress("template"))
        self.result["time"] = {
            "clips": self.timer["clips"],
            "seconds_per_clip_batched": self.timer["seconds"] / max(1, self.timer["clips"]),
            "batch": self.cfg.batch,
        }
        self.result["template"] = {"adherence": self.rates(cases, analyses)}
        self.result["temporal"] = {
            "generated": self.temporal_summary([measured[i] for i in range(len(cases))]),
            "world": self.temporal_summary(self.world_temporal(cases)),
        }
        return cases, analyses

    def world_temporal(self, cases: list[PromptCase]) -> list[dict]:
        """The temporal measures of the world's own render of each case (placement seed = case index)."""
        from tessera.data.world import render, spec_for
        from tessera.temporal import temporal_measures

        frames, h, w, _ = self.pipe.resolve_size(self.cfg.width_px, self.cfg.height_px, self.cfg.duration_s, None)
        out = []
        for i, c in enumerate(cases):
            clip = render(spec_for(c.colour, c.shape, c.motion, c.background, i, aspect=w / h), frames, h, w)
            out.append(temporal_measures(clip, c.motion))
        return out

    def temporal_summary(self, rows: list[dict]) -> dict:
        out = {k: estimate([r[k] for r in rows], self.cfg.bootstrap) for k in TEMPORAL}
        out["flicker_0_255"] = estimate([r["flicker_0_255"] for r in rows], self.cfg.bootstrap)
        return out

    def repeats(self, cases: list[PromptCase], analyses: list) -> None:
        """The template adherence again with seeds offset by 1000·k, and each run's difference from the first."""
        first = self.result["template"]["adherence"]
        runs = []
        for k in range(1, self.cfg.repeat):
            seeds = [i + 1000 * k for i in range(len(cases))]
            _, again = adherence(self.generator(), cases, self.cfg.batch, self.progress(f"repeat {k}"), seeds=seeds)
            second = self.rates(cases, again)
            runs.append({"seed_offset": 1000 * k, "adherence": second,
                         "agreement": {a: agree(first[a], second[a]) for a in ATTRIBUTES if second[a]["n"]}})  # fmt: skip
        self.result["template"]["repeats"] = runs

    def paraphrase(self) -> None:
        """The paraphrase set with the enhancer on, and its first prompts with it off."""
        out = {}
        for label, n, enhance in (("enhancer_on", self.cfg.paraphrase, True),
                                  ("enhancer_off", self.cfg.paraphrase_no_enhance, False)):  # fmt: skip
            if n <= 0:
                continue
            cases = paraphrase_cases(n)
            gen = self.generator(enhance=enhance)
            _, analyses = adherence(gen, cases, self.cfg.batch, self.progress(f"paraphrase {label}"))
            out[label] = self.rates(cases, analyses)
        self.result["paraphrase"] = out

    def two_object(self) -> None:
        rows = read_eval_set("two_object")[: self.cfg.two_object]
        if not rows:
            return
        summary, judged = run_two_object(self.generator(), rows, self.cfg.batch, self.progress("two-object"))
        self.result["two_object"] = {
            "both_colours_visible": estimate([all(j["visible"]) for j in judged], binary=True),
            "background": estimate([j["background"] for j in judged], binary=True),
            "object_shape_and_motion": estimate([m for j in judged for m in j["shape_motion"]], binary=True),
            "both_objects_right": estimate([both_right(j) for j in judged], binary=True),
            "judge_on_ground_truth": summary["judge_on_ground_truth"],
        }

    # ------------------------------------------------------------------ sweep

    def sweep(self, cases: list[PromptCase], analyses: list) -> None:
        """Adherence on the subset against steps per solver and against guidance; the main setting's points are reused."""
        idx = list(range(0, len(cases), max(1, self.cfg.sweep_every)))
        sub = [cases[i] for i in idx]
        main = (self.cfg.scheduler, self.cfg.steps, self.guidance)
        by_steps = [(s, n, self.guidance) for s, n in self.cfg.sweep_steps]
        by_guidance = [(self.cfg.scheduler, self.cfg.steps, g) for g in self.cfg.sweep_guidance]
        done: dict[tuple, dict] = {}
        for sched, steps, g in dict.fromkeys(by_steps + by_guidance):  # in order, once each
            if (sched, steps, g) == main:
                judged = [analyses[i] for i in idx]
            else:
                gen = self.generator(scheduler=sched, num_inference_steps=steps, guidance_scale=g)
                _, judged = adherence(
                    gen, sub, self.cfg.batch, self.progress(f"sweep {sched} {steps} g{g:g}"), seeds=idx
                )
            rates = {k: v["value"] for k, v in self.rates(sub, judged).items()}
            done[(sched, steps, g)] = {"scheduler": sched, "steps": steps, "guidance": g, **rates}
        self.result["sweep"] = {
            "prompts": len(sub), "every": self.cfg.sweep_every,
            "main": dict(zip(("scheduler", "steps", "guidance"), main)),
            "steps": [done[p] for p in by_steps], "guidance": [done[p] for p in by_guidance],
        }  # fmt: skip

    # ------------------------------------------------------------------ VAE and time

    @torch.no_grad()
    def vae(self) -> None:
        """PSNR / SSIM of encode -> decode on world clips rendered here (shapes, pans), and decode seconds per clip."""
        from tessera.data.world import WorldConfig, frames_to_tensor, world_clip
        from tessera.metrics import psnr, ssim

        frames, h, w, _ = self.pipe.resolve_size(self.cfg.width_px, self.cfg.height_px, self.cfg.duration_s, None)
        vae, out = self.pipe.vae, {"seed": VAE_SEED, "frames": frames, "size": f"{w}x{h}"}
        for kind, pan in (("shapes", 0.0), ("pans", 1.0)):
            cfg = WorldConfig(seed=VAE_SEED, pan_fraction=pan, exclude_held_out=False)
            clips = [frames_to_tensor(world_clip(VAE_SEED, i, frames, h, w, cfg)[0]) for i in range(self.cfg.vae_clips)]
            x = torch.stack(clips).to(self.pipe.device)  # (N, 3, T, H, W) in [-1, 1]
            with torch.autocast(device_type=self.pipe.device.type, dtype=torch.bfloat16):
                z = vae.encode(x)
                t0 = time.perf_counter()
                y = vae.decode(z).float().clamp(-1, 1)  # (N, 3, T, H, W)
                seconds = time.perf_counter() - t0
            out[kind] = {
                "psnr_db": estimate(psnr(y, x).tolist(), self.cfg.bootstrap),
                "ssim": estimate(ssim(y, x).tolist(), self.cfg.bootstrap),
                "decode_seconds_per_clip": seconds / len(x),
            }
        self.result["vae"] = out

    def timing(self) -> None:
        """End-to-end seconds of one clip alone (batch 1, the main setting; median of `timing_runs`)."""
        runs = []
        for k in range(self.cfg.timing_runs):
            t0 = time.perf_counter()
            self.pipe(eval_cases(1, seed=self.cfg.seed)[0].prompt, seed=k, **self.settings())
            runs.append(time.perf_counter() - t0)
        self.result["time"] |= {"seconds_one_clip_median": float(np.median(runs)), "one_clip_runs_s": runs}

    # ------------------------------------------------------------------ the whole run

    def run(self, out_dir: Path | None = None) -> dict:
        """Every part in order; after each, the result so far goes to out_dir/suite.partial.json."""
        t_all, cpu_all = time.perf_counter(), time.process_time()
        self.result = {"config": self.describe(), "machine": machine(), "seconds": {}, "cpu_seconds": {}}
        state: dict = {}
        parts = [
            ("template", lambda: state.update(zip(("cases", "analyses"), self.template()))),
            ("repeat", lambda: self.repeats(state["cases"], state["analyses"]) if self.cfg.repeat > 1 else None),
            ("paraphrase", self.paraphrase),
            ("two_object", self.two_object),
            ("sweep", lambda: self.sweep(state["cases"], state["analyses"])),
            ("vae", self.vae),
            ("timing", self.timing),
        ]
        for name, part in parts:  # wall and CPU seconds (this process, all threads): on a shared machine they differ
            t0, cpu0 = time.perf_counter(), time.process_time()
            part()
            self.result["seconds"][name] = round(time.perf_counter() - t0, 1)
            self.result["cpu_seconds"][name] = round(time.process_time() - cpu0, 1)
            log.info("suite: %s done in %.1f s", name, self.result["seconds"][name])
            if out_dir is not None:
                Path(out_dir, "suite.partial.json").write_text(json.dumps(self.result, indent=1))
        self.result["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
        self.result["cpu_seconds"]["total"] = round(time.process_time() - cpu_all, 1)
        return self.result

    def describe(self) -> dict:
        frames, h, w, fps = self.pipe.resolve_size(self.cfg.width_px, self.cfg.height_px, self.cfg.duration_s, None)
        d = asdict(self.cfg) | {"guidance": self.guidance, "frames": frames, "size": f"{w}x{h}", "fps": fps}
        d["sweep_steps"] = [list(p) for p in self.cfg.sweep_steps]
        return d


def machine() -> dict:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_at_start": round(load, 2)}  # fmt: skip


def run_suite(pipe, cfg: SuiteConfig, out_dir: Path, progress: Progress | None = None) -> dict:
    """Run the suite and write out_dir/suite.json, suite.md, adherence_vs_steps.png, adherence_vs_guidance.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = Suite(pipe, cfg, progress).run(out_dir)
    plot_sweep(result["sweep"], out_dir)
    (out_dir / "suite.md").write_text(markdown(result), encoding="utf-8")
    (out_dir / "suite.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    (out_dir / "suite.partial.json").unlink(missing_ok=True)  # the whole result is in place
    return result


# ----------------------------------------------------------------------------- plots and table

PLOTTED = ("colour", "shape", "motion", "background", "all_four")


def plot_sweep(sweep: dict, out_dir: Path) -> None:
    """adherence_vs_steps.png (a line per solver, at the main guidance) and adherence_vs_guidance.png (main solver)."""
    from tessera.plots import line_panels

    by_steps: dict[str, dict] = {a: {} for a in PLOTTED}
    by_guidance: dict[str, dict] = {a: {} for a in PLOTTED}
    for a in PLOTTED:
        for p in sweep["steps"]:
            by_steps[a].setdefault(p["scheduler"], []).append((p["steps"], p[a]))
        for p in sweep["guidance"]:
            by_guidance[a].setdefault(f"{p['scheduler']} {p['steps']}", []).append((p["guidance"], p[a]))
    n, m = sweep["prompts"], sweep["main"]
    line_panels(out_dir / "adherence_vs_steps.png", by_steps, f"steps ({n} prompts, guidance {m['guidance']:g})")
    line_panels(out_dir / "adherence_vs_guidance.png", by_guidance, f"guidance ({n} prompts)")


def _pct(e: dict | float | None, digits: int = 1, scale: float = 100.0) -> str:
    """A rate as '87.5' (percent), or an estimate dict as '87.5 [80.1, 92.3]'."""
    if isinstance(e, dict):
        if e["value"] is None:
            return "—"
        lo, hi = e["ci95"]
        return f"{e['value'] * scale:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
    return "—" if e is None else f"{e * scale:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(r: dict) -> str:
    """The suite's result as Markdown: adherence, temporal, VAE and time tables, the sweep, the repeats."""
    c = r["config"]
    setting = f"{c['scheduler']} {c['steps']} steps, guidance {c['guidance']:g}, {c['size']}, {c['frames']} frames"
    lines = [
        f"# tessera eval --suite ({setting})",
        "",
        "Values in %, with the 95% interval over prompts in brackets.",
        "",
    ]
    rows = [
        [
            "template",
            str(r["template"]["adherence"]["colour"]["n"]),
            *(_pct(r["template"]["adherence"][a]) for a in ATTRIBUTES),
        ]
    ]
    for label, rates in r["paraphrase"].items():
        rows.append(
            [f"paraphrase, {label.replace('_', ' ')}", str(rates["colour"]["n"]), *(_pct(rates[a]) for a in ATTRIBUTES)]
        )
    lines += ["## Adherence", "", *_table(["set", "prompts", *ATTRIBUTES], rows), ""]
    if "two_object" in r:
        t = r["two_object"]
        g = t["judge_on_ground_truth"]
        lines += ["## Two objects", "", *_table(["measure", "generated", "judge on the world's renders"], [
            [k.replace("_", " "), _pct(t[k]), _pct(g[k])] for k in ("both_colours_visible", "background", "object_shape_and_motion", "both_objects_right")
        ]), ""]  # fmt: skip
    tg, tw = r["temporal"]["generated"], r["temporal"]["world"]
    trows = [[k, _pct(tg[k]), _pct(tw[k])] for k in TEMPORAL]
    trows.append(
        ["flicker (0–255, lower is better)", _pct(tg["flicker_0_255"], 2, 1.0), _pct(tw["flicker_0_255"], 2, 1.0)]
    )
    lines += ["## Temporal (template clips)", "", *_table(["measure", "generated", "world's renders"], trows), ""]
    v = r["vae"]
    vrows = [[k, _pct(v[k]["psnr_db"], 2, 1.0), _pct(v[k]["ssim"], 4, 1.0), f"{v[k]['decode_seconds_per_clip']:.2f}"]
             for k in ("shapes", "pans")]  # fmt: skip
    lines += [f"## VAE ({v['size']}, {v['frames']} frames, seed {v['seed']})", "",
              *_table(["clips", "PSNR dB", "SSIM", "decode s / clip"], vrows), ""]  # fmt: skip
    lines += _sweep_lines(r["sweep"]) + _repeat_lines(r["template"].get("repeats", []))
    tm, sec = r["time"], r["seconds"]
    lines += ["## Time", "", f"- {tm['seconds_per_clip_batched']:.2f} s per clip in batches of {tm['batch']}; "
              f"one clip alone {tm['seconds_one_clip_median']:.2f} s (median of {len(tm['one_clip_runs_s'])})",
              "- wall seconds: " + ", ".join(f"{k} {x:g}" for k, x in sec.items()),
              "- CPU seconds: " + ", ".join(f"{k} {x:g}" for k, x in r["cpu_seconds"].items()),
              f"- machine: {r['machine']['platform']}, {r['machine']['cpus']} CPUs, "
              f"{r['machine']['torch_threads']} torch threads, load average {r['machine']['load_average_at_start']} at start", ""]  # fmt: skip
    return "\n".join(lines)


def _sweep_lines(sw: dict) -> list[str]:
    rows = [[f"{p['scheduler']} {p['steps']}", f"{p['guidance']:g}", *(_pct(p[a]) for a in ATTRIBUTES)]
            for p in sw["steps"] + [q for q in sw["guidance"] if q not in sw["steps"]]]  # fmt: skip
    return [f"## Steps and guidance ({sw['prompts']} template prompts: every {sw['every']}-th, same seeds)", "",
            *_table(["solver, steps", "guidance", *ATTRIBUTES], rows), "",
            "![adherence vs steps](adherence_vs_steps.png) ![adherence vs guidance](adherence_vs_guidance.png)", ""]  # fmt: skip


def _repeat_lines(repeats: list[dict]) -> list[str]:
    if not repeats:
        return []
    rows = [[f"+{rp['seed_offset']}", a, _pct(g["first"]), _pct(g["second"]), f"{g['difference'] * 100:+.1f}",
             f"{g['noise'] * 100:.1f}", "yes" if g["within"] else "no"]
            for rp in repeats for a, g in rp["agreement"].items()]  # fmt: skip
    return ["## Repeat with other seeds (template adherence)", "",
            *_table(["seeds", "measure", "first", "second", "difference", "noise (±)", "within"], rows), ""]  # fmt: skip
