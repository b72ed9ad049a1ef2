"""The shapes world: a deterministic procedural generator of captioned clips.

Every clip is made from a `ClipSpec` (what is in it) rendered at any size, frame count and
fps. Two kinds of clip:

* shapes: one or two flat objects (circle, square, triangle) in one of seven colours,
  moving on a plain background;
* photo pans: a slow camera pan or zoom across a natural image bundled with scikit-image.

Frames are uint8 arrays of shape (T, H, W, 3). The same (seed, index) always gives the
same clip, so datasets are reproducible without storing pixels.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 70),
    "blue": (50, 90, 220),
    "yellow": (235, 210, 50),
    "purple": (150, 60, 190),
    "orange": (240, 140, 30),
    "white": (240, 240, 240),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "gray": (110, 110, 110),
    "navy": (20, 30, 70),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down", "bouncing", "growing", "shrinking", "spinning", "still")
DIRECTIONS = ("left", "right", "up", "down")

# Photo pans: scikit-image images that ship inside the package (no download).
PHOTOS: dict[str, str] = {
    "astronaut": "an astronaut",
    "camera": "a cameraman",
    "chelsea": "a cat",
    "coffee": "a cup of coffee",
    "rocket": "a rocket on a launch pad",
    "immunohistochemistry": "stained tissue under a microscope",
    "colorwheel": "a colour wheel",
    "brick": "a brick wall",
    "grass": "grass",
    "gravel": "gravel",
}
PAN_MOVES = ("left", "right", "up", "down", "in", "out")


def motion_valid(shape: str, motion: str) -> bool:
    """Spinning is only visible for shapes without rotational symmetry of a circle."""
    return not (motion == "spinning" and shape == "circle")


def all_combos() -> list[tuple[str, str, str]]:
    """Every valid (colour, shape, motion) combination, in a fixed order."""
    return [(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS if motion_valid(s, m)]


@functools.lru_cache(maxsize=8)
def held_out_combos(fraction: float = 0.1, seed: int = 0) -> frozenset[tuple[str, str, str]]:
    """A fixed `fraction` of (colour, shape, motion) combinations never shown in training."""
    combos = all_combos()
    rng = np.random.default_rng(seed)
    n = max(1, round(fraction * len(combos)))
    picked = rng.choice(len(combos), size=n, replace=False)
    return frozenset(combos[i] for i in sorted(picked))


@dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    motion: str
    x0: float  # start centre, fraction of width
    y0: float  # start centre, fraction of height
    radius: float  # circumradius, fraction of the shorter side
    travel: float = 0.45  # distance moved over the clip, fraction of the frame side
    angle0: float = 0.0  # start rotation, radians
    spin_turns: float = 0.5  # rotations over the clip when spinning
    bounces: float = 2.0  # bounces over the clip when bouncing
    radius_end: float = 0.0  # end radius for growing / shrinking


@dataclass(frozen=True)
class ClipSpec:
    """What one clip shows. `kind` is "shapes" or "pan"."""

    kind: str
    background: str = "black"
    objects: tuple[ShapeObject, ...] = ()
    photo: str = ""
    pan: str = ""
    pan_zoom: float = 1.6  # how much bigger than the frame the photo is drawn

    @property
    def title(self) -> str:
        """Short title, as a person would type it ("red circle left")."""
        if self.kind == "pan":
            return f"pan {self.pan} {self.photo}"
        parts = [f"{o.colour} {o.shape} {o.motion}" for o in self.objects]
        return " and ".join(parts)


def random_object(
    rng: np.random.Generator,
    colour: str,
    shape: str,
    motion: str,
    aspect: float,
) -> ShapeObject:
    """Place one object so that its whole motion stays inside the frame.

    `aspect` is width / height; radii are fractions of the shorter side, positions
    fractions of each side.
    """
    r = float(rng.uniform(0.12, 0.25))
    r_end = r
    if motion == "growing":
        r, r_end = float(rng.uniform(0.08, 0.13)), float(rng.uniform(0.28, 0.35))
    elif motion == "shrinking":
        r, r_end = float(rng.uniform(0.28, 0.35)), float(rng.uniform(0.08, 0.13))
    rmax = max(r, r_end)
    # radius as a fraction of width and height
    # the largest radius as a fraction of width and of height
    rx, ry = rmax * min(1.0, 1.0 / aspect), rmax * min(1.0, aspect)
    travel = 0.0
    x0 = float(rng.uniform(rx, 1 - rx))
    y0 = float(rng.uniform(ry, 1 - ry))
    if motion in DIRECTIONS:
        span = 1 - 2 * (rx if motion in ("left", "right") else ry)
        travel = float(rng.uniform(max(0.34, 0.6 * span), max(0.34, span)))
        travel = min(travel, span)
        lo = rx if motion in ("left", "right") else ry
        start = float(rng.uniform(lo, lo + span - travel))
        if motion == "left":
            x0 = 1 - start
        elif motion == "right":
            x0 = start
        elif motion == "up":
            y0 = 1 - start
        else:
            y0 = start
    elif motion == "bouncing":
        travel = float(rng.uniform(0.3, max(0.31, 1 - 2 * ry)))
        travel = min(travel, 1 - 2 * ry)
        y0 = float(rng.uniform(ry + travel, 1 - ry))  # floor of the bounce
    return ShapeObject(
        colour=colour,
        shape=shape,
        motion=motion,
        x0=x0,
        y0=y0,
        radius=r,
        travel=travel,
        angle0=float(rng.uniform(0, 2 * math.pi)),
        spin_turns=float(rng.uniform(0.35, 0.6)) * (1 if rng.random() < 0.5 else -1),
        bounces=float(rng.choice([1.5, 2.0, 2.5])),
        radius_end=r_end,
    )


def object_state(o: ShapeObject, s: float) -> tuple[float, float, float, float]:
    """Centre (x, y as fractions), radius (fraction of shorter side), angle at time s in [0, 1]."""
    x, y, r, a = o.x0, o.y0, o.radius, o.angle0
    if o.motion == "left":
        x = o.x0 - o.travel * s
    elif o.motion == "right":
        x = o.x0 + o.travel * s
    elif o.motion == "up":
        y = o.y0 - o.travel * s
    elif o.motion == "down":
        y = o.y0 + o.travel * s
    elif o.motion == "bouncing":
        y = o.y0 - o.travel * abs(math.sin(math.pi * o.bounces * s + math.pi / 2))
    elif o.motion in ("growing", "shrinking"):
        r = o.radius + (o.radius_end - o.radius) * s
    elif o.motion == "spinning":
        a = o.angle0 + 2 * math.pi * o.spin_turns * s
    return x, y, r, a


def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, r: float, a: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape with circumradius r (pixels), angle a."""
    if shape == "circle":
        dist = np.sqrt(dx * dx + dy * dy) - r
    else:
        c, s = math.cos(a), math.sin(a)
        u, v = c * dx + s * dy, -s * dx + c * dy
        if shape == "square":
            half = r / math.sqrt(2)
            dist = np.maximum(np.abs(u), np.abs(v)) - half
        else:  # equilateral triangle, inradius r / 2
            dist = np.full_like(dx, -np.inf)
            for k in range(3):  # outward normals of the three edges, in shape coordinates
                phi = math.pi / 2 + 2 * math.pi * k / 3
                dist = np.maximum(dist, u * math.cos(phi) + v * math.sin(phi) - r / 2)
    return np.clip(0.5 - dist, 0.0, 1.0)


@functools.lru_cache(maxsize=16)
def _photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as float32 RGB in [0, 255], shape (H, W, 3)."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if img.max() <= 1.0:
        img = img * 255.0
    return img


def _sample_bilinear(img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear lookup of img (H, W, 3) at float pixel coordinates ys (h, 1), xs (1, w)."""
    h, w = img.shape[:2]
    ys = np.clip(ys, 0, h - 1.001)
    xs = np.clip(xs, 0, w - 1.001)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bot = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bot * fy


def render(spec: ClipSpec, frames: int, height_px: int, width_px: int) -> np.ndarray:
    """Render a clip to uint8 frames of shape (frames, height_px, width_px, 3)."""
    out = np.empty((frames, height_px, width_px, 3), dtype=np.uint8)
    times = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    if spec.kind == "pan":
        img = _photo(spec.photo)
        ih, iw = img.shape[:2]
        for i, s in enumerate(times):
            # view rectangle in photo pixels: fixed aspect of the output frame
            zoom = spec.pan_zoom
            if spec.pan == "in":
                zoom = 1.0 + (spec.pan_zoom - 1.0) * s + 0.2
            elif spec.pan == "out":
                zoom = spec.pan_zoom - (spec.pan_zoom - 1.0) * s + 0.2
            scale = min(ih / height_px, iw / width_px) / zoom  # photo px per output px
            vh, vw = height_px * scale, width_px * scale
            cx, cy = iw / 2, ih / 2
            mx, my = (iw - vw) / 2, (ih - vh) / 2  # room to move
            p = 2 * s - 1  # -1 .. 1
            if spec.pan == "right":
                cx += mx * p * 0.9
            elif spec.pan == "left":
                cx -= mx * p * 0.9
            elif spec.pan == "down":
                cy += my * p * 0.9
            elif spec.pan == "up":
                cy -= my * p * 0.9
            ys = (cy - vh / 2 + (np.arange(height_px) + 0.5) * scale)[:, None]
            xs = (cx - vw / 2 + (np.arange(width_px) + 0.5) * scale)[None, :]
            out[i] = np.clip(_sample_bilinear(img, ys, xs), 0, 255).astype(np.uint8)
        return out

    bg = np.array(BACKGROUNDS[spec.background], dtype=np.float32)
    yy, xx = np.mgrid[0:height_px, 0:width_px].astype(np.float32) + 0.5
    short = min(height_px, width_px)
    for i, s in enumerate(times):
        frame = np.broadcast_to(bg, (height_px, width_px, 3)).copy()
        for o in spec.objects:
            x, y, r, a = object_state(o, float(s))
            cov = _coverage(o.shape, xx - x * width_px, yy - y * height_px, r * short, a)
            col = np.array(COLOURS[o.colour], dtype=np.float32)
            frame = frame * (1 - cov[..., None]) + col * cov[..., None]
        out[i] = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    return out


@dataclass
class WorldConfig:
    """How the dataset of clips is drawn."""

    seed: int = 0
    pan_fraction: float = 0.1  # share of photo-pan clips
    two_object_fraction: float = 0.1  # share of shapes clips with a second object
    holdout_fraction: float = 0.1  # share of (colour, shape, motion) combos never trained on
    holdout_seed: int = 0
    exclude_held_out: bool = True
    wording: str = "template"  # captions: "template" phrases, "rich" or "full" vocabularies (data/world/wording.py)


def sample_spec(rng: np.random.Generator, aspect: float, cfg: WorldConfig) -> ClipSpec:
    """Draw one clip description from the world's grammar."""
    if rng.random() < cfg.pan_fraction:
        return ClipSpec(
            kind="pan",
            photo=str(rng.choice(list(PHOTOS))),
            pan=str(rng.choice(PAN_MOVES)),
            pan_zoom=float(rng.uniform(1.4, 2.0)),
        )
    banned = held_out_combos(cfg.holdout_fraction, cfg.holdout_seed) if cfg.exclude_held_out else set()
    combos = [c for c in all_combos() if c not in banned]
    colour, shape, motion = combos[rng.integers(len(combos))]
    background = str(rng.choice(list(BACKGROUNDS)))
    objects = [random_object(rng, colour, shape, motion, aspect)]
    if rng.random() < cfg.two_object_fraction:
        c2, s2, m2 = combos[rng.integers(len(combos))]
        if c2 != colour:
            objects.append(random_object(rng, c2, s2, m2, aspect))
    return ClipSpec(kind="shapes", background=background, objects=tuple(objects))


def spec_for(colour: str, shape: str, motion: str, background: str, seed: int, aspect: float = 1.0) -> ClipSpec:
    """A one-object clip with the given attributes (placement drawn from `seed`)."""
    rng = np.random.default_rng(seed)
    return ClipSpec(kind="shapes", background=background, objects=(random_object(rng, colour, shape, motion, aspect),))
