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


def object_mask(frames: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """Background name, background colour (3,) float and object mask (T, H, W) bool of a clip (T, H, W, 3) uint8.

    The background is the median colour of the border pixels; object pixels are far from it (L1 > 100).
    """
    f = frames.astype(np.float32)
    border = np.concatenate([f[:, 0], f[:, -1], f[:, :, 0], f[:, :, -1]], axis=1).reshape(-1, 3)
    bg_rgb = np.median(border, axis=0)
    return _nearest(bg_rgb, BACKGROUNDS), bg_rgb, np.abs(f - bg_rgb).sum(-1) > 100


def analyze(frames: np.ndarray) -> Analysis:
    """Judge a clip (T, H, W, 3) uint8 of one object on a plain background."""
    background, _, mask = object_mask(frames)
    return _judge_mask(frames.astype(np.float32), mask, background)


def analyze_objects(frames: np.ndarray, colours: list[str]) -> list[Analysis]:
    """Judge each object of a clip (T, H, W, 3) with several objects, told apart by their (distinct) colours."""
    f = frames.astype(np.float32)
    background, _, mask = object_mask(frames)
    palette = np.array(list(COLOURS.values()), dtype=np.float32)  # (K, 3)
    nearest = np.argmin(np.linalg.norm(f[..., None, :] - palette, axis=-1), axis=-1)  # (T, H, W)
    names = list(COLOURS)
    return [_judge_mask(f, mask & (nearest == names.index(c)), background) for c in colours]


@dataclass
class Track:
    """Per-frame geometry of an object mask, for the frames where it is visible (area ≥ 0.3% of the frame).

    frames: indices of those frames (N,); cx, cy: centroid as fractions of width and height (N,);
    area: pixels / shorter side² (N,); fill: area / (π r²) with r the 99th-percentile radius (N,).
    """

    frames: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    area: np.ndarray
    fill: np.ndarray


def track(mask: np.ndarray) -> Track:
    """Centroid, area and fill of the object mask (T, H, W) in every frame where it is visible."""
    t, h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    short = min(h, w)
    rows = []
    for i in range(t):
        m = mask[i]
        a = float(m.sum())
        if a < 0.003 * h * w:
            continue
        x0, y0 = float(xx[m].mean()), float(yy[m].mean())
        r = float(np.percentile(np.hypot(xx[m] - x0, yy[m] - y0), 99)) + 0.5
        rows.append((i, x0 / w, y0 / h, a / short**2, a / (math.pi * r * r)))
    cols = np.array(rows, dtype=np.float64).reshape(-1, 5).T  # (5, N)
    return Track(cols[0].astype(int), cols[1], cols[2], cols[3], cols[4])


def shape_of_fill(fill: float) -> str:
    """The shape class of a fill ratio: circle ≈ 1, square ≈ 0.64, triangle ≈ 0.41."""
    return "circle" if fill > 0.8 else "square" if fill > 0.52 else "triangle"


def _judge_mask(f: np.ndarray, mask: np.ndarray, background: str) -> Analysis:
    """Colour, shape and motion of the object whose pixels are `mask` (T, H, W) in frames `f` (T, H, W, 3)."""
    tr = track(mask)
    valid, n = tr.frames, len(tr.frames)
    if n < max(2, mask.shape[0] // 2):
        return Analysis(background, None, None, None, visible_frames=n)
    colour = _nearest(np.median(f[mask], axis=0), COLOURS)
    med_fill = float(np.median(tr.fill))
    shape = shape_of_fill(med_fill)
    k = max(1, n // 5)
    growth = float(np.median(tr.area[-k:]) / max(np.median(tr.area[:k]), 1e-6))
    dx, dy = float(np.median(tr.cx[-k:]) - np.median(tr.cx[:k])), float(np.median(tr.cy[-k:]) - np.median(tr.cy[:k]))
    y_range = float(tr.cy.max() - tr.cy.min())
    if growth > 2.0:
        motion = "growing"
    elif growth < 0.5:
        motion = "shrinking"
    elif y_range > 0.1 and _reversals(tr.cy, 0.05) >= 2 and abs(dx) < 0.1:
        motion = "bouncing"
    elif max(abs(dx), abs(dy)) > 0.12:
        motion = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
    else:
        first = mask[valid[0]]
        iou = min(float((first & mask[i]).sum() / max((first | mask[i]).sum(), 1)) for i in valid[1:])
        motion = "spinning" if iou < 0.85 else "still"
    return Analysis(background, colour, shape, motion, fill=med_fill, visible_frames=n)


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


ATTRIBUTES = ("colour", "shape", "motion", "direction", "background", "all_four")


def correct(c: PromptCase, a: Analysis) -> dict[str, bool | None]:
    """Which attributes of one case the judge found as asked; direction is None for prompts without one."""
    return {
        "colour": a.colour == c.colour,
        "shape": a.shape == c.shape,
        "motion": a.motion == c.motion,
        "direction": a.motion == c.motion if c.motion in DIRECTIONS else None,
        "background": a.background == c.background,
        "all_four": (a.colour, a.shape, a.motion, a.background) == (c.colour, c.shape, c.motion, c.background),
    }


def score(cases: list[PromptCase], analyses: list[Analysis]) -> dict:
    """Accuracy per attribute, over all cases and over held-out / seen combinations separately."""

    def acc(rows: list[tuple[PromptCase, Analysis]]) -> dict:
        if not rows:
            return {}
        marks = [correct(c, a) for c, a in rows]
        out: dict = {"n": len(rows)}
        for k in ATTRIBUTES:
            v = [m[k] for m in marks if m[k] is not None]
            out[k] = float(np.mean(v)) if v else float("nan")
        return out

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


def adherence(
    generate: Callable[[list[str], list[int]], list[np.ndarray]],
    cases: list[PromptCase],
    batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
    partial: Callable[[dict, int], None] | None = None,
    seeds: list[int] | None = None,
) -> tuple[dict, list[Analysis]]:
    """Generate each case's prompt (seed = case index, or `seeds[i]`) and judge the frames.

    partial(scores so far, cases done) after every batch, so a long run can be read before it ends.
    """
    seeds = list(range(len(cases))) if seeds is None else list(seeds)
    analyses: list[Analysis] = []
    for i in range(0, len(cases), batch):
        chunk = cases[i : i + batch]
        videos = generate([c.prompt for c in chunk], seeds[i : i + len(chunk)])
        analyses += [analyze(v) for v in videos]
        if progress:
            progress(len(analyses), len(cases))
        if partial:
            partial(score(cases[: len(analyses)], analyses), len(analyses))
    return score(cases, analyses), analyses


# ----------------------------------------------------------------------------- two objects


def judge_two(row: dict, frames: np.ndarray) -> dict:
    """One row of the two-object set against its clip (T, H, W, 3): each colour visible, each shape and motion, background."""
    found = analyze_objects(frames, [o["colour"] for o in row["objects"]])
    return {
        "visible": [a.shape is not None for a in found],
        "shape_motion": [(a.shape, a.motion) == (o["shape"], o["motion"]) for o, a in zip(row["objects"], found)],
        "background": found[0].background == row["background"],
    }


def render_two(row: dict, seed: int, shape: tuple) -> np.ndarray:
    """The world's own render (T, H, W, 3) of a two-object row, placements drawn from `seed`; shape = (T, H, W, 3)."""
    from tessera.data.world.scenes import ClipSpec, random_object, render

    t, h, w, _ = shape
    rng = np.random.default_rng(seed)
    objs = tuple(random_object(rng, o["colour"], o["shape"], o["motion"], w / h) for o in row["objects"])
    return render(ClipSpec("shapes", row["background"], objs), t, h, w)


def two_scores(judged: list[dict]) -> dict:
    """Shares over two-object judgements: both colours visible, background, each object's shape and motion,
    and prompts with both objects right (colour, shape and motion of each)."""
    n = max(len(judged), 1)
    return {
        "both_colours_visible": sum(all(j["visible"]) for j in judged) / n,
        "background": sum(j["background"] for j in judged) / n,
        "object_shape_and_motion": sum(sum(j["shape_motion"]) for j in judged) / (2 * n),
        "both_objects_right": sum(both_right(j) for j in judged) / n,
    }


def both_right(judged: dict) -> bool:
    """A two-object judgement with each object's colour visible and its shape and motion right."""
    return all(judged["visible"]) and all(judged["shape_motion"])


def two_object(
    generate: Callable[[list[str], list[int]], list[np.ndarray]],
    rows: list[dict],
    batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict, list[dict]]:
    """Generate each two-object row (seed = row index) and judge each object on the pixels of its colour.

    Objects overlap and hide each other, so the judge also runs on the world's own renders of the
    same prompts ("judge_on_ground_truth"): the ceiling for shape and motion.
    """
    judged, shape = [], None
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        videos = generate([r["prompt"] for r in chunk], list(range(i, i + len(chunk))))
        judged += [judge_two(r, v) for r, v in zip(chunk, videos)]
        shape = videos[0].shape  # (T, H, W, 3)
        if progress:
            progress(len(judged), len(rows))
    truth = [judge_two(r, render_two(r, i, shape)) for i, r in enumerate(rows)]
    return {"n": len(rows), **two_scores(judged), "judge_on_ground_truth": two_scores(truth)}, judged
