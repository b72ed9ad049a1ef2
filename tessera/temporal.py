"""Temporal measures of a clip: does the subject stay itself, does the background flicker, is the motion smooth.

Every function takes a clip `frames` (T, H, W, 3) uint8 of one object on a plain background
(the shapes world) and is a pure function of it (`parts`, the mask and track found once by `temporal_measures`,
only saves finding them again). The object is found as `tessera.eval.analyze`
finds it: pixels far (L1 > 100) from the median colour of the border. A frame "shows the object"
when its mask covers at least 0.3% of the frame. Scores are in [0, 1], higher is better, and
count every frame of the clip, so an object that vanishes is an inconsistent one.

* colour: the object's mean colour in each frame against the clip's median of those colours;
  score = share of frames within `tol_rgb` (Euclidean distance in 0–255 RGB).
* size: area in each frame against the clip's median area; score = share of frames within
  ±`tol` (relative); `cv` = coefficient of variation of the area. Meaningless for growing
  and shrinking prompts, which `temporal_measures` leaves out.
* identity: the shape class of each frame's fill ratio (`tessera.eval.shape_of_fill`) against
  the clip's class (that of the median fill, as the judge decides); score = share of frames equal.
* flicker: mean absolute change (0–255, over channels) between consecutive frames of the
  pixels that are background in both (the object masks of both frames, grown by `margin_px`,
  left out); score = 1 − change / 255.
* motion smoothness: each middle centroid predicted from its neighbours, ĉ_i = (c_{i−1} + c_{i+1}) / 2,
  over every run of three consecutive frames that show the object. residual r = mean |c_i − ĉ_i|
  (pixels; half the acceleration), speed v = mean |c_{i+1} − c_{i−1}| / 2 (pixels per frame);
  score = 1 − r / (r + max(v, 1% of the shorter side)). Constant velocity scores 1; a track
  whose jumps are as large as its travel scores about 0.5. The floor keeps a still object's
  sub-pixel wobble from counting as jerky motion.
"""

from __future__ import annotations

import numpy as np

from tessera.eval import Track, object_mask, shape_of_fill, track

Parts = tuple[np.ndarray, Track]  # the object mask (T, H, W) and its track, found once per clip


def _parts(frames: np.ndarray, parts: Parts | None) -> Parts:
    if parts is not None:
        return parts
    mask = object_mask(frames)[2]
    return mask, track(mask)


def colour_consistency(frames: np.ndarray, tol_rgb: float = 30.0, parts: Parts | None = None) -> dict:
    """Score and largest distance (0–255 RGB) of the object's per-frame mean colour from the clip's median."""
    mask, tr = _parts(frames, parts)
    if len(tr.frames) == 0:
        return {"score": 0.0, "max_rgb_distance": float("nan")}
    means = np.stack([frames[i][mask[i]].astype(np.float64).mean(axis=0) for i in tr.frames])  # (N, 3)
    dist = np.linalg.norm(means - np.median(means, axis=0), axis=1)  # (N,)
    return {"score": float((dist <= tol_rgb).sum() / len(frames)), "max_rgb_distance": float(dist.max())}


def size_consistency(frames: np.ndarray, tol: float = 0.2, parts: Parts | None = None) -> dict:
    """Share of frames whose object area is within ±tol of the clip's median area, and the area's coefficient of variation."""
    area = _parts(frames, parts)[1].area
    if len(area) == 0:
        return {"score": 0.0, "cv": float("nan")}
    within = np.abs(area / np.median(area) - 1.0) <= tol
    return {"score": float(within.sum() / len(frames)), "cv": float(area.std() / area.mean())}


def identity_consistency(frames: np.ndarray, parts: Parts | None = None) -> dict:
    """Share of frames whose shape class (from the fill ratio) is the clip's class, and that class."""
    fill = _parts(frames, parts)[1].fill
    if len(fill) == 0:
        return {"score": 0.0, "shape": None}
    clip_class = shape_of_fill(float(np.median(fill)))
    same = sum(shape_of_fill(float(x)) == clip_class for x in fill)
    return {"score": same / len(frames), "shape": clip_class}


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    """Binary dilation of masks (T, H, W) by a (2px+1)² square."""
    from scipy.ndimage import maximum_filter

    return maximum_filter(mask, size=(1, 2 * px + 1, 2 * px + 1)) if px else mask


def flicker(frames: np.ndarray, margin_px: int = 3, parts: Parts | None = None) -> dict:
    """Mean absolute frame-to-frame change (0–255) of the pixels that are background in both frames, and its score."""
    if len(frames) < 2:
        return {"mean_abs_change": 0.0, "score": 1.0}
    obj = _grow(_parts(frames, parts)[0], margin_px)  # (T, H, W)
    keep = ~(obj[1:] | obj[:-1])  # (T-1, H, W) background in both frames
    diff = np.abs(frames[1:].astype(np.float32) - frames[:-1].astype(np.float32)).mean(-1)  # (T-1, H, W)
    if not keep.any():
        return {"mean_abs_change": float("nan"), "score": float("nan")}
    change = float(diff[keep].mean())
    return {"mean_abs_change": change, "score": 1.0 - change / 255.0}


def motion_smoothness(frames: np.ndarray, parts: Parts | None = None) -> dict:
    """How well each centroid is predicted by its neighbours' midpoint: score, residual and speed in pixels."""
    t, h, w, _ = frames.shape
    tr = _parts(frames, parts)[1]
    pos = {int(i): np.array([x * w, y * h]) for i, x, y in zip(tr.frames, tr.cx, tr.cy)}  # frame -> (x, y) px
    mids = [i for i in pos if i - 1 in pos and i + 1 in pos]
    if not mids:
        return {"score": float("nan"), "residual_px": float("nan"), "speed_px": float("nan")}
    r = float(np.mean([np.linalg.norm(pos[i] - (pos[i - 1] + pos[i + 1]) / 2) for i in mids]))
    v = float(np.mean([np.linalg.norm(pos[i + 1] - pos[i - 1]) / 2 for i in mids]))
    floor = 0.01 * min(h, w)
    return {"score": 1.0 - r / (r + max(v, floor)), "residual_px": r, "speed_px": v}


def temporal_measures(frames: np.ndarray, motion: str | None = None) -> dict:
    """All five scores of a clip (T, H, W, 3) uint8; size is left out (None) for growing and shrinking prompts."""
    parts = _parts(frames, None)
    size = None if motion in ("growing", "shrinking") else size_consistency(frames, parts=parts)["score"]
    flick = flicker(frames, parts=parts)
    return {
        "colour": colour_consistency(frames, parts=parts)["score"],
        "size": size,
        "identity": identity_consistency(frames, parts=parts)["score"],
        "flicker": flick["score"],
        "flicker_0_255": flick["mean_abs_change"],
        "smoothness": motion_smoothness(frames, parts=parts)["score"],
    }
