"""Frames of the same prompts and seeds before and after preference tuning, as one PNG.

python benchmarks/prefer_strips.py --after runs/prefer2/preferred.safetensors
# writes benchmarks/results/prefer_strips.png: per prompt, a row of frames from each model
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

RESULTS = Path(__file__).resolve().parent / "results"
CASES = [  # triangles (the shape most often wrong before tuning) and a few others, fixed seeds
    ("red", "triangle", "left", "black", 0),
    ("yellow", "triangle", "up", "navy", 1),
    ("white", "triangle", "spinning", "gray", 2),
    ("green", "triangle", "growing", "black", 3),
    ("blue", "square", "right", "gray", 4),
    ("purple", "circle", "bouncing", "navy", 5),
]
FRAMES = (0, 8, 16)  # of the 17 of a 2 s clip
THUMB = 96


def clips(checkpoint: str | None) -> list[np.ndarray]:
    from tessera.pipeline import TesseraPipeline
    from tessera.safety.watermarker import Ledger

    tmp = tempfile.TemporaryDirectory()
    pipe = TesseraPipeline.from_single_file(checkpoint, ledger=Ledger(f"{tmp.name}/l.sqlite3"))
    from tessera.data.world import simple_prompt

    return [pipe(simple_prompt(*c[:4]), seed=c[4]).frames for c in CASES]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--after", required=True, help="the tuned generation checkpoint (tessera prefer's output)")
    ap.add_argument("--before", default=None, help="the model it was tuned from (default: the bundled model)")
    args = ap.parse_args()
    from tessera.eval import analyze

    rows = {"before": clips(args.before), "after": clips(args.after)}
    label_w, gap = 250, 12
    img = Image.new("RGB", (label_w + 2 * (len(FRAMES) * THUMB + gap), len(CASES) * (THUMB + 28) + 24), "white")
    d = ImageDraw.Draw(img)
    for k, name in enumerate(rows):
        d.text((label_w + k * (len(FRAMES) * THUMB + gap), 4), name, fill="black")
    for i, case in enumerate(CASES):
        y = 24 + i * (THUMB + 28)
        d.text((4, y + THUMB // 2 - 6), f"{' '.join(case[:4])}\n(seed {case[4]})", fill="black")
        for k, frames in enumerate(rows.values()):
            x0 = label_w + k * (len(FRAMES) * THUMB + gap)
            for j, f in enumerate(FRAMES):
                img.paste(Image.fromarray(frames[i][f]).resize((THUMB, THUMB)), (x0 + j * THUMB, y))
            a = analyze(frames[i])
            d.text((x0, y + THUMB + 2), f"judged: {a.colour} {a.shape} {a.motion}", fill="gray")
    out = RESULTS / "prefer_strips.png"
    img.save(out)
    print(out)


if __name__ == "__main__":
    main()
