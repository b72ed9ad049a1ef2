"""Prompt adherence, measured from decoded frames alone.

`analyze` looks at a clip of the shapes world and says which background, colour, shape
and motion it shows; `adherence` generates clips for prompts from the grammar and
compares. Nothing here reads the model: the judge sees pixels only.

How the judge decides:
* background: median colour of the border pixels, nearest background palette entry;
* object: pixels far (L1 > 100) from that background colour;
* colour: median object colour, nearest palette entry;
* shape: area / (π r²) with r the object's circumradius (99th percentile of distances
  from the centroid): circle ≈ 1, square = 2/π ≈ 0.64, triangle = 3√3/(4π) ≈ 0.41;
* motion: area trend (growing / shrinking), direction reversals of the height
  (bouncing), net centroid displacement (left / right / up / down), else the mask
  changing in place (spinning: some frame overlaps the first by IoU < 0.85) or not (still).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tessera.data.world import BACKGROUNDS, COLOURS, DIRECTIONS, all_combos, held_out_combos, simple_prompt


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    d = [np.linalg.norm(rgb - np.array(palette[n], dtype=np.float32)) for n in names]
    return names[int(np.argmin(d))]


def _reversals(y: np.ndarray, hysteresis: float) -> int:
    """Number of direction changes of a 1D trajectory, ignoring wiggles smaller than `hysteresis`."""
    count, direction, extreme = 0, 0, y[0]
    for v in y[1:]:
        if direction >= 0 and v < extreme - hysteresis:
            count += direction > 0
            direction, extreme = -1, v
        elif direction <= 0 and v > extreme + hysteresis:
            count += direction < 0
            direction, extreme = 1, v
        elif (direction >= 0 and v > extreme) or (direction <= 0 and v < extreme):
            extreme = v
    return count


@dataclass
class Analysis:
    background: str
    colour: str | None
    shape: str | None
    motion: str | None
    fill: float = float("nan")
    visible_frames: int = 0


def analyze(frames: np.ndarray) -> Analysis:
    """Judge a clip (T, H, W, 3) uint8 of one object on a plain background."""
    t, h, w, _ = frames.shape
    f = frames.astype(np.float32)
    border = np.concatenate([f[:, 0], f[:, -1], f[:, :, 0], f[:, :, -1]], axis=1).reshape(-1, 3)
    bg_rgb = np.median(border, axis=0)
    background = _nearest(bg_rgb, BACKGROUNDS)
    mask = np.abs(f - bg_rgb).sum(-1) > 100  # (T, H, W)
    return _judge_mask(f, mask, background)


def analyze_objects(frames: np.ndarray, colours: list[str]) -> list[Analysis]:
    """Judge each object of a clip (T, H, W, 3) with several objects, told apart by their (distinct) colours."""
    f = frames.astype(np.float32)
    border = np.concatenate([f[:, 0], f[:, -1], f[:, :, 0], f[:, :, -1]], axis=1).reshape(-1, 3)
    bg_rgb = np.median(border, axis=0)
    background = _nearest(bg_rgb, BACKGROUNDS)
    mask = np.abs(f - bg_rgb).sum(-1) > 100  # (T, H, W)
    palette = np.array(list(COLOURS.values()), dtype=np.float32)  # (K, 3)
    nearest = np.argmin(np.linalg.norm(f[..., None, :] - palette, axis=-1), axis=-1)  # (T, H, W)
    names = list(COLOURS)
    return [_judge_mask(f, mask & (nearest == names.index(c)), background) for c in colours]


def _judge_mask(f: np.ndarray, mask: np.ndarray, background: str) -> Analysis:
    """Colour, shape and motion of the object whose pixels are `mask` (T, H, W) in frames `f` (T, H, W, 3)."""
    t, h, w = mask.shape
    min_area = 0.003 * h * w
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    short = min(h, w)
    cx, cy, area, fill, valid = [], [], [], [], []
    for i in range(t):
        m = mask[i]
        a = float(m.sum())
        if a < min_area:
            continue
        x0, y0 = float(xx[m].mean()), float(yy[m].mean())
        r = float(np.percentile(np.hypot(xx[m] - x0, yy[m] - y0), 99)) + 0.5
        cx.append(x0 / w)
        cy.append(y0 / h)
        area.append(a / short**2)
        fill.append(a / (math.pi * r * r))
        valid.append(i)
    if len(valid) < max(2, t // 2):
        return Analysis(background, None, None, None, visible_frames=len(valid))
    colour = _nearest(np.median(f[mask], axis=0), COLOURS)
    med_fill = float(np.median(fill))
    shape = "circle" if med_fill > 0.8 else "square" if med_fill > 0.52 else "triangle"
    cx_a, cy_a, area_a = np.array(cx), np.array(cy), np.array(area)
    k = max(1, len(valid) // 5)
    growth = float(np.median(area_a[-k:]) / max(np.median(area_a[:k]), 1e-6))
    dx, dy = float(np.median(cx_a[-k:]) - np.median(cx_a[:k])), float(np.median(cy_a[-k:]) - np.median(cy_a[:k]))
    y_range = float(cy_a.max() - cy_a.min())
    if growth > 2.0:
        motion = "growing"
    elif growth < 0.5:
        motion = "shrinking"
    elif y_range > 0.1 and _reversals(cy_a, 0.05) >= 2 and abs(dx) < 0.1:
        motion = "bouncing"
    elif max(abs(dx), abs(dy)) > 0.12:
        motion = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
    else:
        first = mask[valid[0]]
        iou = min(float((first & mask[i]).sum() / max((first | mask[i]).sum(), 1)) for i in valid[1:])
        motion = "spinning" if iou < 0.85 else "still"
    return Analysis(background, colour, shape, motion, fill=med_fill, visible_frames=len(valid))


@dataclass
class PromptCase:
    colour: str
    shape: str
    motion: str
    background: str
    held_out: bool
    text: str = ""  # the prompt as worded; empty: the template wording
    style: str = "template"  # how it is worded (paraphrase set: sentence shape; see tessera/eval_sets)

    @property
    def prompt(self) -> str:
        return self.text or simple_prompt(self.colour, self.shape, self.motion, self.background)


EVAL_SETS = ("template", "paraphrase", "two-object")


def read_eval_set(name: str) -> list[dict]:
    """The rows of a prompt set shipped in tessera/eval_sets ("paraphrase", "two_object")."""
    import json
    from importlib import resources

    text = (resources.files("tessera") / "eval_sets" / f"{name}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def paraphrase_cases(n: int = 120) -> list[PromptCase]:
    """The first `n` prompts of the paraphrase set: held-out wordings and sentence shapes, some with typos."""
    rows = read_eval_set("paraphrase")[:n]
    return [
        PromptCase(r["colour"], r["shape"], r["motion"], r["background"], r["held_out_combo"], r["prompt"],
                   r["style"] + ("+typos" if r["typos"] else ""))
        for r in rows
    ]  # fmt: skip


def eval_cases(n: int = 120, seed: int = 1234) -> list[PromptCase]:
    """`n` prompts from the grammar: every held-out combination once, the rest drawn from seen ones."""
    held = sorted(held_out_combos())
    seen = [c for c in all_combos() if c not in set(held)]
    rng = np.random.default_rng(seed)
    bgs = list(BACKGROUNDS)
    cases = [PromptCase(*c, bgs[rng.integers(3)], True) for c in held[: max(0, n // 6)]]
    while len(cases) < n:
        c = seen[rng.integers(len(seen))]
        cases.append(PromptCase(*c, bgs[rng.integers(3)], False))
    return cases


def score(cases: list[PromptCase], analyses: list[Analysis]) -> dict:
    """Accuracy per attribute, over all cases and over held-out / seen combinations separately."""

    def acc(rows: list[tuple[PromptCase, Analysis]]) -> dict:
        if not rows:
            return {}
        dirs = [(c, a) for c, a in rows if c.motion in DIRECTIONS]
        return {
            "n": len(rows),
            "colour": float(np.mean([a.colour == c.colour for c, a in rows])),
            "shape": float(np.mean([a.shape == c.shape for c, a in rows])),
            "motion": float(np.mean([a.motion == c.motion for c, a in rows])),
            "direction": float(np.mean([a.motion == c.motion for c, a in dirs])) if dirs else float("nan"),
            "background": float(np.mean([a.background == c.background for c, a in rows])),
            "all_four": float(np.mean([_all_four(c, a) for c, a in rows])),
        }

    rows = list(zip(cases, analyses))
    result = {
        "all": acc(rows),
        "seen": acc([r for r in rows if not r[0].held_out]),
        "held_out": acc([r for r in rows if r[0].held_out]),
    }
    styles = sorted({c.style for c in cases})
    if len(styles) > 1:
        result["by_style"] = {s: acc([r for r in rows if r[0].style == s]) for s in styles}
    return result


def _all_four(c: PromptCase, a: Analysis) -> bool:
    return (a.colour, a.shape, a.motion, a.background) == (c.colour, c.shape, c.motion, c.background)


def adherence(
    generate: Callable[[list[str], list[int]], list[np.ndarray]],
    cases: list[PromptCase],
    batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
    partial: Callable[[dict, int], None] | None = None,
) -> tuple[dict, list[Analysis]]:
    """Generate each case's prompt (seed = case index) and judge the frames.

    partial(scores so far, cases done) after every batch, so a long run can be read before it ends.
    """
    analyses: list[Analysis] = []
    for i in range(0, len(cases), batch):
        chunk = cases[i : i + batch]
        videos = generate([c.prompt for c in chunk], list(range(i, i + len(chunk))))
        analyses += [analyze(v) for v in videos]
        if progress:
            progress(len(analyses), len(cases))
        if partial:
            partial(score(cases[: len(analyses)], analyses), len(analyses))
    return score(cases, analyses), analyses
