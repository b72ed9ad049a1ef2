"""Speed table of generation and adherence against steps for each solver, in one run.

    python benchmarks/generate.py [--only speed|adherence|plot] [--rounds 3] [--every 5]

speed: warm timings (pipeline loaded once, 256×256, 2 s, one clip) of the teacher with
Euler at 25 steps, the same without text key/value reuse, the higher-order solvers at
fewer steps and int8 weights, each as the median of `--rounds` interleaved rounds, with
ratios to the teacher side by side (denoising timed per configuration, the shared decode
once); the DiT's weight memory in fp32 / bf16 / int8; cold
`tessera generate` (process start -> MP4) with the defaults and with `--fast`.
adherence: `tessera eval` judgements on every `--every`-th of its 120 prompts (same
prompts and seeds as the full run) for each (solver, steps, int8) configuration; runs
already in the JSON are kept, so the section resumes. calls: 3 guided DiT calls with text
K/V reused, recomputed, and in int8, interleaved (ratios per round, median). plot: adherence vs model calls per
solver, `benchmarks/results/adherence_vs_steps.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path("benchmarks/results")
PROMPT = "a red circle moving left on a black background"
SPEED_CONFIGS = {  # name -> (scheduler, steps, int8, reuse text K/V)
    "euler 25 (teacher)": ("euler", 25, False, True),
    "euler 25, K/V recomputed each step": ("euler", 25, False, False),
    "euler 12": ("euler", 12, False, True),
    "heun 6 (11 calls)": ("heun", 6, False, True),
    "dpm++2m 12": ("dpm++2m", 12, False, True),
    "dpm++2m 8": ("dpm++2m", 8, False, True),
    "int8 euler 25": ("euler", 25, True, True),
    "int8 dpm++2m 12": ("dpm++2m", 12, True, True),
}
ADHERENCE_CONFIGS = [  # (scheduler, steps, int8)
    ("euler", 25, False), ("euler", 12, False), ("heun", 6, False), ("dpm++2m", 12, False), ("dpm++2m", 8, False),
    ("euler", 25, True),
]  # fmt: skip
ATTRIBUTES = ("colour", "shape", "motion", "direction", "background")


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    import torch

    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return f"{cpu}, {torch.get_num_threads()} torch threads, load average {load:.1f} at start"


def calls(scheduler: str, steps: int) -> int:
    from tessera.schedulers import get_scheduler

    s = get_scheduler(scheduler)
    s.set_timesteps(steps, 1.0)
    return len(s.timesteps)


def warm_speed(rounds: int) -> dict:
    """Median seconds per clip for each configuration, the pipeline loaded once per weight type.

    Every configuration's denoising (prompt encoding + all steps, `output_type="latent"`) is
    timed each round; the rest of a clip (one VAE decode, watermark, record) is the same for
    all of them and is timed once per round as a full teacher call minus its denoising.
    """
    from tessera.models.quant import weight_bytes
    from tessera.pipeline import TesseraPipeline
    from tessera.safety.watermarker import Ledger

    tmp = tempfile.TemporaryDirectory()
    pipes = {False: TesseraPipeline.from_single_file(ledger=Ledger(f"{tmp.name}/l.jsonl"))}
    fp32_bytes = weight_bytes(pipes[False].transformer)
    pipes[True] = TesseraPipeline.from_single_file(ledger=Ledger(f"{tmp.name}/l.jsonl")).quantize_int8()
    int8_bytes = weight_bytes(pipes[True].transformer)
    times: dict[str, list[float]] = {name: [] for name in [*SPEED_CONFIGS, "full clip, euler 25"]}
    for r in range(rounds + 1):  # round 0 warms caches and is not counted
        for name, (scheduler, steps, int8, reuse) in SPEED_CONFIGS.items():
            pipe = pipes[int8].enable_text_kv_reuse(reuse)
            t0 = time.perf_counter()
            pipe(PROMPT, seed=r, num_inference_steps=steps, scheduler=scheduler, output_type="latent")
            times[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pipes[False].enable_text_kv_reuse(True)(PROMPT, seed=r, num_inference_steps=25, scheduler="euler")
        times["full clip, euler 25"].append(time.perf_counter() - t0)
        if r == 0:
            times = {name: [] for name in times}
        else:
            print(f"round {r}: " + ", ".join(f"{n} {t[-1]:.1f} s" for n, t in times.items()), flush=True)
    med = {name: statistics.median(t) for name, t in times.items()}
    rest = med["full clip, euler 25"] - med["euler 25 (teacher)"]  # decode, watermark, record
    base = med["euler 25 (teacher)"]
    table = {
        name: {
            "scheduler": cfg[0], "steps": cfg[1], "model_calls": calls(cfg[0], cfg[1]), "int8": cfg[2],
            "text_kv_reuse": cfg[3], "denoise_median_s": round(med[name], 2), "clip_s": round(med[name] + rest, 2),
            "denoise_speedup_vs_teacher": round(base / med[name], 2),
            "clip_speedup_vs_teacher": round((base + rest) / (med[name] + rest), 2),
            "denoise_runs_s": [round(t, 2) for t in times[name]],
        }
        for name, cfg in SPEED_CONFIGS.items()
    }  # fmt: skip
    reuse = med["euler 25, K/V recomputed each step"] / base
    memory = {
        "dit_fp32_mb": round(fp32_bytes / 2**20, 1), "dit_bf16_mb": round(fp32_bytes / 2 / 2**20, 1),
        "dit_int8_mb": round(int8_bytes / 2**20, 1), "ratio_vs_fp32": round(fp32_bytes / int8_bytes, 2),
        "ratio_vs_bf16": round(fp32_bytes / 2 / int8_bytes, 2),
    }  # fmt: skip
    return {
        "warm": table, "decode_mark_record_s": round(rest, 2), "full_clip_teacher_s": round(med["full clip, euler 25"], 2),
        "text_kv_reuse_denoise_speedup": round(reuse, 3), "weight_memory": memory,
    }  # fmt: skip


def student_speed(rounds: int) -> dict:
    """Warm seconds per finished clip (256×256, 2 s: denoise, decode, mark, MP4 written, signed, recorded):
    the bundled few-step student against the teacher at its defaults, one pipeline each, side by side.

    Each round, each pipeline makes two clips in a row and the second is timed: a warm pipeline in
    use (a server, a script making many clips). The first pays for the other pipeline having just run
    (its tensors freed to the system, caches cold); it is reported too, as `after_switch`."""
    from tessera.pipeline import TesseraPipeline, bundled_student
    from tessera.safety.watermarker import Ledger

    if not bundled_student().is_file():
        return {"error": f"no bundled student at {bundled_student()}"}
    tmp = tempfile.TemporaryDirectory()
    pipes = {
        "teacher (euler 25, guidance 4)": TesseraPipeline.from_single_file(ledger=Ledger(f"{tmp.name}/l.sqlite3")),
        "student": TesseraPipeline.from_single_file(bundled_student(), ledger=Ledger(f"{tmp.name}/l.sqlite3")),
    }
    times: dict[str, list[float]] = {name: [] for name in pipes}
    switch: dict[str, list[float]] = {name: [] for name in pipes}
    for r in range(rounds + 1):  # round 0 warms caches and is not counted
        for name, pipe in pipes.items():
            for k, into in enumerate((switch, times)):
                path = Path(tmp.name) / f"{r}.mp4"
                t0 = time.perf_counter()
                pipe(PROMPT, seed=2 * r + k, output_type="mp4", output_path=path)
                if r:
                    into[name].append(time.perf_counter() - t0)
                path.unlink()
        if r:
            print(f"round {r}: " + ", ".join(f"{n} {t[-1]:.2f} s (after switch {switch[n][-1]:.2f} s)" for n, t in times.items()), flush=True)  # fmt: skip
    student = pipes["student"]
    ratios = [t / s for t, s in zip(*times.values())]
    return {
        "student_sampling": {**student.sampling, "scheduler": type(student.scheduler).__name__},
        "clip_median_s": {name: round(statistics.median(t), 3) for name, t in times.items()},
        "clip_runs_s": {name: [round(x, 3) for x in t] for name, t in times.items()},
        "after_switch_median_s": {name: round(statistics.median(t), 3) for name, t in switch.items()},
        "after_switch_runs_s": {name: [round(x, 3) for x in t] for name, t in switch.items()},
        "speedup_median": round(statistics.median(ratios), 2),
        "target_student_s": 1.0,
    }


def dit_calls(rounds: int) -> dict:
    """Seconds for 3 guided DiT calls (batch 2, 320 tokens: 256×256, 2 s): K/V reused, recomputed, int8; interleaved."""
    import torch

    from tessera.pipeline import TesseraPipeline, guided_velocity
    from tessera.safety.watermarker import Ledger

    tmp = tempfile.TemporaryDirectory()
    pipe = TesseraPipeline.from_single_file(ledger=Ledger(f"{tmp.name}/l.jsonl"))
    int8 = TesseraPipeline.from_single_file(ledger=Ledger(f"{tmp.name}/l.jsonl")).quantize_int8()
    cond, uncond = pipe.text_encoder([PROMPT]), pipe.text_encoder([""])
    z = torch.randn(1, *pipe.geometry.latent_shape(17, 256, 256))

    def three_calls(model, reuse: bool) -> float:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            t0 = time.perf_counter()
            velocity = guided_velocity(model, cond, uncond, 4.0, reuse_text=reuse)
            for t in (0.9, 0.6, 0.3):
                velocity(z, torch.tensor([t]))
            return time.perf_counter() - t0

    runs = {"reuse": [], "recompute": [], "int8": []}
    for _ in range(rounds):
        runs["reuse"].append(three_calls(pipe.transformer, True))
        runs["recompute"].append(three_calls(pipe.transformer, False))
        runs["int8"].append(three_calls(int8.transformer, True))
    ratio = lambda a, b: round(statistics.median(x / y for x, y in zip(runs[a], runs[b])), 3)  # noqa: E731
    return {
        "median_s": {k: round(statistics.median(v), 2) for k, v in runs.items()},
        "kv_reuse_speedup": ratio("recompute", "reuse"), "int8_speedup": ratio("reuse", "int8"),
        "runs_s": {k: [round(x, 2) for x in v] for k, v in runs.items()},
    }  # fmt: skip


def cold_cli(runs: int) -> dict:
    """Process start -> MP4 with the defaults and with --fast; checks each file decodes to 17 frames of 256×256.

    The package is byte-compiled first, as `make install` and any first run leave it (where
    PYTHONDONTWRITEBYTECODE is set, every start would compile it again)."""
    import compileall

    from tessera.export import probe

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "tessera"), quiet=1)

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TESSERA_HOME=tmp)
        for label, extra in (("defaults", []), ("--fast", ["--fast"])):
            secs = []
            for i in range(runs):
                path = Path(tmp) / f"{label.strip('-')}{i}.mp4"
                cmd = [sys.executable, "-m", "tessera", "generate", PROMPT, "-o", str(path), "--seed", str(i), *extra]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                secs.append(time.perf_counter() - t0)
                info = probe(path)
                assert (info["width"], info["height"], info["frames"]) == (256, 256, 17), info
            out[label] = {"median_s": round(statistics.median(secs), 2), "runs_s": [round(s, 2) for s in secs]}
            print(f"cold {label}: {out[label]}", flush=True)
    return out


def adherence_run(scheduler: str, steps: int, int8: bool, every: int) -> dict:
    """`tessera eval`'s cases i = 0, every, 2·every, ... of 120 (seed = i, as in the full run), judged from pixels."""
    from tessera.eval import analyze, eval_cases, score
    from tessera.pipeline import TesseraPipeline
    from tessera.safety.watermarker import Ledger

    tmp = tempfile.TemporaryDirectory()
    pipe = TesseraPipeline.from_single_file(ledger=Ledger(f"{tmp.name}/l.jsonl"))
    if int8:
        pipe.quantize_int8()
    idx = list(range(0, 120, every))
    cases = [eval_cases(120, seed=1234)[i] for i in idx]
    judged = []
    for j in range(0, len(cases), 8):
        outs = pipe(
            [c.prompt for c in cases[j : j + 8]], seed=idx[j : j + 8], num_inference_steps=steps, scheduler=scheduler
        )
        judged += [analyze(o.frames) for o in outs]
    result = score(cases, judged)["all"]
    result["judged"] = [[a.colour, a.shape, a.motion, a.background] for a in judged]
    return result


def config_key(scheduler: str, steps: int, int8: bool) -> str:
    return f"{'int8 ' if int8 else ''}{scheduler} {steps}"


def plot(adherence: dict, path: Path) -> None:
    """One panel per attribute: adherence (%) against model calls, a line per solver (bf16 runs)."""
    from PIL import Image, ImageDraw

    colours = {"euler": (60, 60, 60), "heun": (220, 60, 40), "dpm++2m": (40, 110, 220)}
    panel_w, panel_h, pad = 300, 220, 40
    img = Image.new("RGB", (panel_w * len(ATTRIBUTES), panel_h + 40), "white")
    draw = ImageDraw.Draw(img)
    max_calls = 50
    for p, attr in enumerate(ATTRIBUTES):
        x0, y0, x1, y1 = p * panel_w + pad, 25, (p + 1) * panel_w - 10, panel_h - 10
        draw.rectangle([x0, y0, x1, y1], outline=(180, 180, 180))
        draw.text((x0, 5), f"{attr} (%)", fill="black")
        for v in (50, 75, 100):
            y = y1 - (v - 40) / 60 * (y1 - y0)
            draw.line([x0, y, x1, y], fill=(230, 230, 230))
            draw.text((x0 - 25, y - 6), str(v), fill="gray")
        for c in (10, 25, 50):
            draw.text((x0 + c / max_calls * (x1 - x0) - 6, y1 + 3), str(c), fill="gray")
        for solver, col in colours.items():
            pts = sorted(
                (r["model_calls"], r[attr] * 100)
                for r in adherence.values()
                if r["scheduler"] == solver and not r["int8"]
            )
            xy = [(x0 + c / max_calls * (x1 - x0), y1 - (max(v, 40) - 40) / 60 * (y1 - y0)) for c, v in pts]
            if len(xy) > 1:
                draw.line(xy, fill=col, width=2)
            for x, y in xy:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col)
    legend = "   ".join(colours)
    draw.text(
        (pad, panel_h + 15),
        f"model calls (x) per solver: {legend}  (black euler, red heun, blue dpm++2m)",
        fill="black",
    )
    img.save(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["speed", "student", "calls", "adherence", "plot"], default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--every", type=int, default=5, help="adherence on every k-th of the 120 eval prompts")
    ap.add_argument("--out", default=str(RESULTS / "speed.json"))
    args = ap.parse_args()
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    kept = ("adherence", "dit_calls", "machine", "student", "warm", "cold", "weight_memory")
    result = {k: previous[k] for k in kept if k in previous}  # finished runs are kept
    result["benchmark"] = "generation speed (warm and cold) and adherence vs steps, bundled model, 256x256, 2 s"
    if args.only in (None, "speed"):
        result["machine"] = machine()
        result.update(warm_speed(args.rounds))
        result["cold"] = cold_cli(args.cold_runs)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    if args.only in (None, "student"):
        result["machine"] = machine()
        result["student"] = student_speed(max(5, args.rounds))
        print(json.dumps(result["student"]), flush=True)
        if args.only == "student":
            result["cold"] = cold_cli(args.cold_runs)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    if args.only in (None, "calls"):
        result["machine"] = machine()
        result["dit_calls"] = dit_calls(args.rounds * 3)
        print(json.dumps(result["dit_calls"]), flush=True)
    if args.only in (None, "adherence"):
        adherence = result.setdefault("adherence", {})
        result["adherence_prompts"] = f"every {args.every}th of `tessera eval --prompts 120` (seed = index)"
        for scheduler, steps, int8 in ADHERENCE_CONFIGS:
            key = config_key(scheduler, steps, int8)
            if key not in adherence:
                t0 = time.perf_counter()
                run = adherence_run(scheduler, steps, int8, args.every)
                adherence[key] = {"scheduler": scheduler, "steps": steps, "int8": int8, "model_calls": calls(scheduler, steps), **run, "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
                out.write_text(json.dumps(result, indent=2))
                print(key, {a: adherence[key][a] for a in ATTRIBUTES}, flush=True)
    if args.only in (None, "plot", "adherence"):
        plot(result.get("adherence", {}), RESULTS / "adherence_vs_steps.png")
    out.write_text(json.dumps(result, indent=2))
    print(
        json.dumps({k: v for k, v in result.items() if k in ("text_kv_reuse_denoise_speedup", "weight_memory", "cold")})
    )


if __name__ == "__main__":
    main()
