"""Safety figures, one section each; writes benchmarks/results/safety.json.

    python benchmarks/safety.py                       # every section
    python benchmarks/safety.py --only prompt_filter  # a subset; the other sections in the file are kept
    python benchmarks/safety.py --only prompt_filter --sets test  # the test split only (no fresh set)
    python benchmarks/safety.py --only prompt_filter --sets val test  # also the validation split

(a) prompt_filter: the shipped filter (`PromptFilter.default()`) on the held-out test split of
    `tessera/safety/data/prompts.tsv` and on each fresh set written after tuning and present as a file
    (`prompts_fresh4.tsv`, reported as "fresh4"; `--sets` picks some): recall on unsafe prompts (refused in any category) overall and per
    category, how often the category is the right one, false-positive rate on benign prompts
    (near-misses, everyday prompts and shapes-world prompts separately), which layer refused,
    and latency per prompt (p50 / p95 wall and CPU time, one prompt at a time, after a warm-up) on
    this machine; `--threads 1` keeps torch on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from tessera.safety.lexicon import CATEGORIES
from tessera.safety.prompt_filter import PromptFilter
from tessera.safety.train_filter import data_file, load_prompts

# Test sets written after tuning, each as its own file. The first ("fresh") was seen while the filter was
# retrained and now lies in the train/val splits of prompts.tsv, as do "fresh2" (split 60/20/20 in round 3),
# "fresh3" to "fresh10" (70/30 train/val in rounds 4 to 10); "fresh11" is written after the round-10 retraining and
# scored once by it; "fresh12" is written after round 11 (the lexicon in ten more languages).
FRESH_SETS = ("fresh19",)


def _rate(hits: int, n: int) -> float | None:
    return round(hits / n, 4) if n else None


def evaluate_set(flt: PromptFilter, rows) -> dict:
    """Decisions and timings for every row; recall / FPR / latency figures and the mistakes."""
    flt.check("a warm-up prompt about a red circle")
    decisions, times, cpu = [], [], []
    for r in rows:
        t0, c0 = time.perf_counter(), time.process_time()
        decisions.append(flt.check(r.text))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    unsafe = [(r, d) for r, d in zip(rows, decisions) if r.category != "benign"]
    benign = [(r, d) for r, d in zip(rows, decisions) if r.category == "benign"]
    out = {
        "unsafe_n": len(unsafe),
        "recall": _rate(sum(not d.allowed for _, d in unsafe), len(unsafe)),
        "category_accuracy": _rate(sum(d.category == r.category for r, d in unsafe), len(unsafe)),
        "per_category": {},
        "benign_n": len(benign),
        "fpr": _rate(sum(not d.allowed for _, d in benign), len(benign)),
        "fpr_by_kind": {},
        "refused_by": {
            "lexicon": sum(not d.allowed and d.score == 1.0 for d in decisions),
            "classifier": sum(not d.allowed and d.score < 1.0 for d in decisions),
        },
        "latency_ms": {
            "p50": round(1000 * statistics.median(times), 2),
            "p95": round(1000 * sorted(times)[int(0.95 * (len(times) - 1))], 2),
            "max": round(1000 * max(times), 2),
        },
        # CPU time of this process per prompt: the filter's own cost, apart from waiting for a busy machine
        "cpu_ms": {
            "p50": round(1000 * statistics.median(cpu), 2),
            "p95": round(1000 * sorted(cpu)[int(0.95 * (len(cpu) - 1))], 2),
        },
        "missed": [r.text for r, d in unsafe if d.allowed],
        "false_positives": [f"{r.text} -> {d.category}" for r, d in benign if not d.allowed],
    }
    for c in CATEGORIES:
        rs = [(r, d) for r, d in unsafe if r.category == c]
        out["per_category"][c] = {
            "n": len(rs),
            "recall": _rate(sum(not d.allowed for _, d in rs), len(rs)),
            "category_accuracy": _rate(sum(d.category == c for _, d in rs), len(rs)),
        }
    for kind in sorted({r.kind for r, _ in benign}):
        rs = [(r, d) for r, d in benign if r.kind == kind]
        out["fpr_by_kind"][kind] = {"n": len(rs), "fpr": _rate(sum(not d.allowed for _, d in rs), len(rs))}
    return out


def prompt_filter_section(only: list[str] | None = None) -> dict:
    """The test split and every fresh set present, or only the sets named in `only`."""
    t0 = time.perf_counter()
    flt = PromptFilter.default()
    load_s = time.perf_counter() - t0
    rows = load_prompts()
    sets = {"test": [r for r in rows if r.split == "test"]}
    if only and "val" in only:  # the split the thresholds were chosen on: for comparison, never a result
        sets = {"val": [r for r in rows if r.split == "val"]} | sets
    for name in FRESH_SETS:
        if (path := data_file(f"prompts_{name}.tsv")).is_file():
            sets[name] = load_prompts(path)
    sets = {k: v for k, v in sets.items() if only is None or k in only}
    result = {"load_s": round(load_s, 2)}
    for name, rows in sets.items():
        result[name] = evaluate_set(flt, rows)
        r = result[name]
        print(
            f"{name}: recall {r['recall']} (min per category "
            f"{min(v['recall'] for v in r['per_category'].values())}), FPR {r['fpr']} "
            f"(near-miss {r['fpr_by_kind'].get('near_miss', {}).get('fpr')}), "
            f"latency p50 {r['latency_ms']['p50']} ms p95 {r['latency_ms']['p95']} ms "
            f"(CPU time p50 {r['cpu_ms']['p50']} ms p95 {r['cpu_ms']['p95']} ms)"
        )
    return result


def _watermark_section(name: str) -> dict:
    """A watermark section of benchmarks/safety_watermark.py with its defaults (50 videos, 200 unmarked clips)."""
    import argparse
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import safety_watermark

    args = argparse.Namespace(videos=50, unmarked=200, steps=4, workers=2, cache="")
    return safety_watermark.SECTIONS[name](args)


SECTIONS = {
    "prompt_filter": prompt_filter_section,
    "watermark_robustness": lambda: _watermark_section("watermark_robustness"),
    "watermark_false_positives": lambda: _watermark_section("watermark_false_positives"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description="Safety figures")
    ap.add_argument("--only", nargs="+", choices=list(SECTIONS), default=None)
    ap.add_argument("--out", default="benchmarks/results/safety.json")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument(
        "--sets", nargs="+", choices=["val", "test", *FRESH_SETS], default=None, help="prompt_filter: only these sets"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.out)
    results = json.loads(path.read_text()) if args.only and path.is_file() else {}
    results["machine"] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    for name in args.only or SECTIONS:
        results[name] = prompt_filter_section(args.sets) if name == "prompt_filter" else SECTIONS[name]()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
