"""Adherence before and after preference tuning, per attribute and per shape, from `prefer_run*.json`.

python benchmarks/prefer_plot.py    # reads benchmarks/results/prefer_run*.json, writes prefer_adherence.png
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

RESULTS = Path(__file__).resolve().parent / "results"
BARS = ("colour", "shape", "motion", "all_four", "circle", "square", "triangle")


def rates(block: dict) -> dict[str, float]:
    out = {k: block["summary"]["all"][k] for k in ("colour", "shape", "motion", "all_four")}
    return out | {s: v["rate"] for s, v in block["per_shape"].items()}


def main() -> None:
    runs = sorted(RESULTS.glob("prefer_run*.json"))
    if not runs:
        raise SystemExit(f"no prefer_run*.json in {RESULTS}; run tessera prefer and its eval first")
    loaded = [json.loads(p.read_text()) for p in runs]
    series = [("before", rates(loaded[0]["eval_before"]), (150, 150, 150))]
    colours = [(220, 60, 40), (40, 110, 220), (40, 160, 80)]
    for i, (p, r) in enumerate(zip(runs, loaded)):
        label = f"{p.stem.removeprefix('prefer_')}: {r['prefer']['pairs']} pairs"
        series.append((label, rates(r["eval_after"]), colours[i % len(colours)]))
    group_w, bar_w, h, top, base = 110, 22, 300, 30, 250
    img = Image.new("RGB", (group_w * len(BARS) + 60, h + 30 + 16 * len(series)), "white")
    d = ImageDraw.Draw(img)
    for v in (50, 75, 100):
        y = base - (v - 40) / 60 * (base - top)
        d.line([40, y, img.width - 10, y], fill=(225, 225, 225))
        d.text((10, y - 6), f"{v}%", fill="gray")
    for g, name in enumerate(BARS):
        x0 = 50 + g * group_w
        for j, (_, r, col) in enumerate(series):
            v = r.get(name, 0) * 100
            y = base - (max(v, 40) - 40) / 60 * (base - top)
            d.rectangle([x0 + j * bar_w, y, x0 + (j + 1) * bar_w - 3, base], fill=col)
        d.text((x0, base + 6), name, fill="black")
    for j, (label, _, col) in enumerate(series):
        y = h + 10 + 16 * j
        d.rectangle([50, y, 62, y + 10], fill=col)
        d.text((70, y - 1), label, fill="black")
    d.text(
        (50, 5),
        "tessera eval --prompts 120 (Euler 25, guidance 4): adherence before and after tessera prefer",
        fill="black",
    )
    out = RESULTS / "prefer_adherence.png"
    img.save(out)
    print(out)


if __name__ == "__main__":
    main()
