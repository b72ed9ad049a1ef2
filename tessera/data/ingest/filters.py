"""Quality filters: measured values of one clip, each compared with a threshold.

Every filter stores what it measured and the threshold it was held to, so a rejection
can be checked and thresholds retuned from the manifest without decoding again.

| filter     | value                                                                  | rejects when  |
|------------|------------------------------------------------------------------------|---------------|
| shake      | jitter of the frame-to-frame global shift (phase correlation), % of short side | above |
| blur       | no-reference blur: how little re-blurring changes the edges (Crete et al. 2007), 0..1 | above |
| compression| median luma step on 8-px grid lines / between them (1 = no blocks)   | above         |
| bitrate    | bits per pixel per frame of the source stream                          | below         |
| dark       | 99th percentile of luma, 0..255 (the highlights of the shot)           | below         |
| static     | mean absolute difference between frames 1/8 s apart, % of the luma range | below       |
| too_short  | clip duration in seconds (set when shots are cut into clips)           | below         |
| unsafe     | probability of an unsafe label from an image classifier (optional)    | above         |
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tessera.data.ingest.probe import clip_times, read_frames
from tessera.data.ingest.record import ClipRecord

UNSAFE_NOT_CONFIGURED = "unsafe filter: not configured"


@dataclass
class FilterConfig:
    analysis_fps: float = 8.0  # frames are sampled at this rate from the start of the clip
    analysis_frames: int = 24  # at most this many frames are measured
    analysis_side_px: int = 256  # frames are measured at this short side (never up-scaled); blocks at native size
    max_shake_pct: float = 1.2
    max_blur: float = 0.55
    max_blockiness: float = 1.2
    min_bits_per_pixel: float = 0.002
    min_highlight_luma: float = 60.0
    min_motion_pct: float = 0.2
    unsafe_model: str = ""  # local transformers image-classification folder; "" disables the filter
    unsafe_labels: tuple[str, ...] = field(default=("nsfw", "unsafe", "porn", "hentai", "sexy", "explicit"))
    max_unsafe: float = 0.5


# ----------------------------------------------------------------------------- measures


def downscale(frames: np.ndarray, side_px: int) -> np.ndarray:
    """Resize (T, H, W, ...) so the short side is at most `side_px` (area filter); never up-scales."""
    h, w = frames.shape[1:3]
    s = side_px / min(h, w)
    if s >= 1:
        return frames
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def global_shifts(luma: np.ndarray, min_response: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Frame-to-frame global translation (dx, dy) in px by phase correlation, and which pairs are reliable.

    Frames are smoothed first (sigma 1 px) so an 8-px compression grid does not pull the
    peak to zero shift. A pair whose correlation peak is below `min_response` (no single
    translation explains it: a spinning object, a cut, heavy artefacts) is marked unreliable.
    Returns shifts (T-1, 2) and reliable (T-1,) bool.
    """
    h, w = luma.shape[1:]
    win = cv2.createHanningWindow((w, h), cv2.CV_32F)
    smooth = [cv2.GaussianBlur(f, (0, 0), 1.0) for f in luma]
    peaks = [cv2.phaseCorrelate(a, b, win) for a, b in zip(smooth[:-1], smooth[1:])]
    shifts = np.asarray([p[0] for p in peaks], np.float64).reshape(-1, 2)
    reliable = np.asarray([p[1] >= min_response for p in peaks], bool)
    return shifts, reliable


def shake_pct(shifts: np.ndarray, reliable: np.ndarray, short_side_px: int) -> float:
    """Jitter of the global shift, in % of the short side: how much it changes from one frame pair to the next.

    A steady pan changes its shift slowly; a hand-held camera changes it every frame along
    both axes. The value is the median change on the quieter axis, so an object bouncing
    along one axis is not taken for shake, and the median ignores the odd frame where an
    object, not the camera, wins the correlation. Fewer than 3 reliable changes give 0.
    """
    both = reliable[1:] & reliable[:-1]
    jumps = np.abs(np.diff(shifts, axis=0))[both]  # (n, 2)
    if len(jumps) < 3:
        return 0.0
    return float(np.median(jumps, axis=0).min() / short_side_px * 100)


def blur_score(plane: np.ndarray, max_frames: int = 8) -> float:
    """No-reference blur of (T, H, W): 0 sharp .. 1 fully blurred, median over up to `max_frames` frames.

    The re-blur measure of Crete et al. (2007), as in `skimage.measure.blur_effect`: blur
    each frame strongly along each axis and see how much of its pixel-to-pixel variation
    survives. A sharp frame loses most of it, a blurred one little. It is a ratio, so a
    dark or low-contrast clip is not called blurred. Frames with no variation are skipped.
    """
    from skimage.measure import blur_effect

    step = max(1, len(plane) // max_frames)
    scores = [blur_effect(f) for f in plane[::step] if np.ptp(f) > 0]
    scores = [x for x in scores if np.isfinite(x)]
    return float(np.median(scores)) if scores else 0.0


def blockiness(luma: np.ndarray, block_px: int = 8, max_step: float = 8.0) -> float:
    """Mean luma step across 8-px block boundaries over the mean step elsewhere (native resolution).

    Steps are clipped at `max_step` luma levels: compression leaves many small steps on
    the grid, while a strong edge of the picture that happens to lie on the grid (a still
    object) must count no more than a small one. 1 means no visible block grid.
    """
    ratios = []
    for axis in (2, 1):
        d = np.minimum(np.abs(np.diff(luma, axis=axis)), max_step)  # step between pixel i and i+1
        on = (np.arange(d.shape[axis]) % block_px) == block_px - 1
        if not on.any() or on.all():
            continue
        ratios.append((np.compress(on, d, axis=axis).mean() + 0.5) / (np.compress(~on, d, axis=axis).mean() + 0.5))
    return float(np.mean(ratios)) if ratios else 1.0


def edge_contrast(plane: np.ndarray) -> float:
    """99.9th percentile of the gradient magnitude of (T, H, W): how strong the clearest edges are."""
    gy, gx = np.gradient(plane, axis=(1, 2))
    return float(np.percentile(np.hypot(gx, gy), 99.9))


def sharpness_plane(luma: np.ndarray, frames: np.ndarray, low_contrast: float = 4.0) -> np.ndarray:
    """The plane to judge sharpness on: luma, or a chroma plane when the luma has almost no edges.

    A purple object on a grey background of the same brightness has its edges in colour
    only. Chroma is measured at half size (it is stored at half size in 4:2:0 video).
    """
    if edge_contrast(luma) >= low_contrast:
        return luma
    h, w = frames.shape[1:3]
    half = [cv2.resize(f, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA) for f in frames]
    ycc = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2YCrCb) for f in half]).astype(np.float32)
    best = max((ycc[..., c] for c in (1, 2)), key=edge_contrast)
    return best if edge_contrast(best) > edge_contrast(luma) else luma


def highlight_luma(luma: np.ndarray) -> float:
    """99th percentile of luma: how bright the brightest parts are (a black background is not 'too dark')."""
    return float(np.percentile(luma, 99))


def motion_pct(luma: np.ndarray) -> float:
    """Mean absolute difference between consecutive analysed frames, in % of the clip's luma range.

    Relative to the range (1st to 99th percentile), so a dim clip that moves is not called static.
    """
    if len(luma) < 2:
        return 0.0
    lo, hi = np.percentile(luma, [1, 99])
    return float(np.abs(np.diff(luma, axis=0)).mean() / max(hi - lo, 16.0) * 100)


# ----------------------------------------------------------------------------- facts for captions

_COLOUR_HUES = {
    "red": 0,
    "orange": 25,
    "yellow": 55,
    "green": 120,
    "cyan": 180,
    "blue": 225,
    "purple": 275,
    "pink": 325,
}


_DARK_NAMES = {"blue": "navy", "red": "maroon", "orange": "brown", "yellow": "olive", "cyan": "teal"}


def _hue_index(hue_deg: np.ndarray) -> np.ndarray:
    centres = np.array(list(_COLOUR_HUES.values()), np.float32)
    d = np.abs(hue_deg[..., None] - centres)
    return np.minimum(d, 360 - d).argmin(-1)


def _gray_name(value: float, levels: tuple[tuple[float, str], ...]) -> str:
    """The first name whose upper bound exceeds `value` (0..1), else white."""
    return next((name for bound, name in levels if value < bound), "white")


def colour_name(rgb) -> str:
    """A plain name for one RGB colour (0..255): a gray level, a hue, or a dark hue (navy, maroon, ...)."""
    c = np.asarray(rgb, np.float32) / 255
    v, lo = float(c.max()), float(c.min())
    if v < 0.12 or (v - lo) / max(v, 1e-6) < 0.25:
        return _gray_name(v, ((0.12, "black"), (0.3, "dark gray"), (0.6, "gray"), (0.85, "light gray")))
    hue = float(cv2.cvtColor(np.uint8([[np.clip(c * 255, 0, 255)]]), cv2.COLOR_RGB2HSV_FULL)[0, 0, 0]) * 360 / 256
    name = list(_COLOUR_HUES)[int(_hue_index(np.float32(hue)))]
    return _DARK_NAMES.get(name, f"dark {name}") if v < 0.55 else name


def dominant_colour(frames: np.ndarray) -> str:
    """Name of the most common saturated hue, or a gray level when little is saturated."""
    f = frames[:: max(1, len(frames) // 4)]
    hsv = np.stack([cv2.cvtColor(x, cv2.COLOR_RGB2HSV_FULL) for x in f]).reshape(-1, 3).astype(np.float32)
    hue, sat, val = hsv[:, 0] * 360 / 256, hsv[:, 1] / 255, hsv[:, 2] / 255
    vivid = (sat > 0.35) & (val > 0.25)
    if vivid.mean() < 0.02:
        return _gray_name(float(val.mean()), ((0.2, "black"), (0.4, "dark gray"), (0.7, "gray")))
    counts = np.bincount(_hue_index(hue[vivid]), minlength=len(_COLOUR_HUES))
    return list(_COLOUR_HUES)[int(counts.argmax())]


def plain_backdrop(frames: np.ndarray, band: float = 0.04, tolerance: float = 40.0) -> str:
    """The name of a plain, unchanging background, or "" when there is none.

    Looks at the frame border (a `band` of each side) of a few frames: it is a plain
    backdrop when at least 85% of its pixels lie within `tolerance` (RGB distance) of
    the border's median colour in every frame, and that colour stays put over the clip.
    frames: uint8 (T, H, W, 3).
    """
    f = frames[:: max(1, len(frames) // 4)].astype(np.float32)
    t, h, w, _ = f.shape
    k = max(1, round(band * min(h, w)))
    border = np.concatenate(
        [
            f[:, :k].reshape(t, -1, 3),
            f[:, -k:].reshape(t, -1, 3),
            f[:, :, :k].reshape(t, -1, 3),
            f[:, :, -k:].reshape(t, -1, 3),
        ],
        axis=1,
    )  # (T, N, 3)
    med = np.median(border, axis=1)  # (T, 3)
    near = np.linalg.norm(border - med[:, None], axis=-1) < tolerance
    if near.mean(axis=1).min() < 0.85 or np.linalg.norm(med - med[0], axis=-1).max() > tolerance / 2:
        return ""
    return colour_name(med.mean(axis=0))


def camera_motion(
    shifts: np.ndarray, reliable: np.ndarray, fps: float, short_side_px: int, shake: float, max_shake_pct: float
) -> str:
    """A word for the camera: static, pan left/right, tilt up/down, hand-held or shaky."""
    if shake > max_shake_pct:
        return "shaky"
    if reliable.sum() < 2:
        return "static"
    v = np.median(shifts[reliable], axis=0) * fps / short_side_px  # share of the frame per second the content moves
    speed = float(np.hypot(*v))
    if speed < 0.05:
        return "hand-held" if shake > max_shake_pct / 3 else "static"
    # content moving left means the camera pans right
    if abs(v[0]) >= abs(v[1]):
        return "pan right" if v[0] < 0 else "pan left"
    return "tilt down" if v[1] < 0 else "tilt up"


# ----------------------------------------------------------------------------- one clip


def measure(frames: np.ndarray, luma: np.ndarray, probe: dict, cfg: FilterConfig) -> tuple[dict, dict]:
    """Filters and caption facts of one clip from its frames sampled at `cfg.analysis_fps`.

    frames: RGB uint8 (T, H, W, 3); luma: the decoder's luma plane uint8 (T, H, W), same times.
    Returns (filters {name: {"value", "threshold", "pass"}}, facts {...}).
    """
    native = luma.astype(np.float32)  # (T, H, W) at the video's own resolution: block grid intact
    small = downscale(native, cfg.analysis_side_px)
    side = min(small.shape[1:])
    shifts, reliable = global_shifts(small)
    values = {
        "shake": (shake_pct(shifts, reliable, side), cfg.max_shake_pct, "max"),
        "blur": (blur_score(sharpness_plane(small, downscale(frames, cfg.analysis_side_px))), cfg.max_blur, "max"),
        "compression": (blockiness(native), cfg.max_blockiness, "max"),
        "bitrate": (float(probe.get("bits_per_pixel", 1.0)), cfg.min_bits_per_pixel, "min"),
        "dark": (highlight_luma(small), cfg.min_highlight_luma, "min"),
        "static": (motion_pct(small), cfg.min_motion_pct, "min"),
    }
    filters = {}
    for name, (v, t, kind) in values.items():
        ok = v <= t if kind == "max" else v >= t
        filters[name] = {"value": round(v, 4), "threshold": t, "pass": bool(ok)}
    thumbs = downscale(frames, 64)
    backdrop = plain_backdrop(thumbs)
    camera = camera_motion(shifts, reliable, cfg.analysis_fps, side, values["shake"][0], cfg.max_shake_pct)
    facts = {
        "mean_luma": round(float(small.mean()), 1),
        "colour": dominant_colour(thumbs),
        "backdrop": backdrop,
        # a plain backdrop that stays put shows no camera motion: any shift found is the subject's
        "camera": "static" if backdrop else camera,
        "motion": round(values["static"][0], 2),
    }
    return filters, facts


def filter_clip(clip: ClipRecord, cfg: FilterConfig) -> dict:
    """Stage 3: quality measures and caption facts of one clip, {"filters", "facts"} (or a rejection)."""
    times = clip_times(clip.start_s, clip.end_s, cfg.analysis_fps, cfg.analysis_frames)
    frames = read_frames(clip.source, times)
    luma = read_frames(clip.source, times, fmt="gray")
    if min(len(frames), len(luma)) < 2:
        return {"reason": "undecodable", "detail": f"only {len(frames)} frame(s) decode in the clip"}
    probe = dataclasses.asdict(clip.probe)
    filters, facts = measure(frames, luma, probe, cfg)
    filters["unsafe"] = unsafe_filter(frames, cfg)
    facts.update(duration_s=round(clip.duration_s, 3), width_px=probe["width_px"], height_px=probe["height_px"])
    return {"filters": filters, "facts": facts}


# ----------------------------------------------------------------------------- unsafe content


class UnsafeClassifier:
    """An image classifier from a local `transformers` folder; score = probability of any unsafe label.

    No safety classifier ships with Tessera or its dependencies; point `path` at one you
    trust (a folder saved with `save_pretrained`, with its image-processor config).
    """

    def __init__(self, path: str | Path, unsafe_labels: tuple[str, ...]):
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(
                f"unsafe classifier folder {path} has no config.json; pass a folder saved with save_pretrained"
            )
        self.processor = AutoImageProcessor.from_pretrained(str(path))
        self.model = AutoModelForImageClassification.from_pretrained(str(path)).eval()
        labels = {int(i): str(n).lower() for i, n in self.model.config.id2label.items()}
        wanted = {x.lower() for x in unsafe_labels}
        self.unsafe_ids = sorted(i for i, n in labels.items() if n in wanted)
        if not self.unsafe_ids:
            raise ValueError(
                f"unsafe classifier labels are {sorted(labels.values())}; none is one of {sorted(wanted)}; "
                "pass --unsafe-labels with the model's unsafe label names"
            )
        self._torch = torch

    def score(self, frames: np.ndarray) -> float:
        """Highest unsafe probability over three frames (first, middle, last) of uint8 (T, H, W, 3)."""
        pick = frames[[0, len(frames) // 2, len(frames) - 1]]
        with self._torch.no_grad():
            inputs = self.processor(images=list(pick), return_tensors="pt")
            probs = self.model(**inputs).logits.float().softmax(-1)  # (3, labels)
        return float(probs[:, self.unsafe_ids].sum(-1).max())


_CLASSIFIERS: dict[tuple, UnsafeClassifier] = {}


def unsafe_filter(frames: np.ndarray, cfg: FilterConfig) -> dict:
    """The `unsafe` filter entry; says it is not configured when no model folder is given."""
    if not cfg.unsafe_model:
        return {"value": None, "threshold": None, "pass": True, "note": UNSAFE_NOT_CONFIGURED}
    key = (cfg.unsafe_model, tuple(cfg.unsafe_labels))
    if key not in _CLASSIFIERS:  # one model per worker process
        _CLASSIFIERS[key] = UnsafeClassifier(cfg.unsafe_model, cfg.unsafe_labels)
    p = _CLASSIFIERS[key].score(frames)
    return {"value": round(p, 4), "threshold": cfg.max_unsafe, "pass": bool(p <= cfg.max_unsafe)}
