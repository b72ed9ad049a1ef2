"""Rule-based recaptioner: short titles become long, detailed captions in varied wording.

The captioner reads a title from the shapes-world grammar ("red circle left",
"pan right chelsea") and writes a sentence or two naming subject, colour, shape,
motion, background and camera. Wording is drawn from several templates so the text
encoder sees paraphrases, not one fixed string per clip.
"""

from __future__ import annotations

import numpy as np

from tessera.data.world.scenes import PHOTOS, ClipSpec, ShapeObject
from tessera.data.world.wording import rich_caption

# template: the fixed phrases below; rich: the vocabularies' "train" words; full: every word of the vocabularies
# (sentence shapes still "train" only; tessera.data.world.wording)
WORDINGS = ("template", "rich", "full")
_WORD_SPLIT = {"rich": "train", "full": "all"}
RICH_TYPO_RATE = 0.02  # share of words misspelled in rich captions

_MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("moving left", "sliding to the left", "travelling steadily leftwards", "drifting from right to left"),
    "right": ("moving right", "sliding to the right", "travelling steadily rightwards", "drifting from left to right"),
    "up": ("moving up", "rising upwards", "travelling steadily up the frame", "drifting from bottom to top"),
    "down": ("moving down", "falling downwards", "travelling steadily down the frame", "drifting from top to bottom"),
    "bouncing": ("bouncing", "bouncing up and down", "hopping like a ball", "bouncing on an invisible floor"),
    "growing": ("growing", "growing larger", "expanding steadily", "getting bigger and bigger"),
    "shrinking": ("shrinking", "shrinking smaller", "contracting steadily", "getting smaller and smaller"),
    "spinning": ("spinning", "spinning in place", "rotating around its centre", "turning slowly on the spot"),
    "still": ("standing still", "resting motionless", "staying perfectly still", "sitting in one place"),
}
_BACKGROUND_PHRASES = (
    "on a {bg} background",
    "against a plain {bg} background",
    "over a flat {bg} backdrop",
    "in front of a solid {bg} background",
)
_CAMERA = ("", " The camera is static.", " Shot with a locked-off camera.", " No camera movement.")
_PAN_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("the camera pans slowly left across", "a slow pan to the left across"),
    "right": ("the camera pans slowly right across", "a slow pan to the right across"),
    "up": ("the camera tilts slowly up over", "a slow upward tilt over"),
    "down": ("the camera tilts slowly down over", "a slow downward tilt over"),
    "in": ("the camera zooms slowly in on", "a slow zoom in on"),
    "out": ("the camera zooms slowly out from", "a slow zoom out from"),
}


def _object_phrase(o: ShapeObject, rng: np.random.Generator) -> str:
    motion = _MOTION_PHRASES[o.motion][rng.integers(len(_MOTION_PHRASES[o.motion]))]
    return f"a {o.colour} {o.shape} {motion}"


def simple_prompt(colour: str, shape: str, motion: str, background: str) -> str:
    """The plain prompt form used in the README and the evaluation: one fixed wording."""
    return f"a {colour} {shape} {_MOTION_PHRASES[motion][0]} on a {background} background"


def caption(spec: ClipSpec, rng: np.random.Generator, wording: str = "template") -> str:
    """A long caption for `spec`, wording drawn from `rng`; "rich" and "full" draw shapes captions from the vocabularies."""
    if wording not in WORDINGS:
        raise ValueError(f"wording {wording!r} is not one of {', '.join(WORDINGS)}")
    if spec.kind == "pan":
        what = PHOTOS[spec.photo]
        lead = _PAN_PHRASES[spec.pan][rng.integers(2)]
        text = f"{lead} a photo of {what}"
        return text[0].upper() + text[1:] + "."
    if wording in _WORD_SPLIT:
        return rich_caption(spec, rng, _WORD_SPLIT[wording], RICH_TYPO_RATE)
    bg = _BACKGROUND_PHRASES[rng.integers(len(_BACKGROUND_PHRASES))].format(bg=spec.background)
    objs = " and ".join(_object_phrase(o, rng) for o in spec.objects)
    style = rng.integers(3)
    if style == 0:
        text = f"{objs} {bg}."
    elif style == 1:
        text = f"A simple animation of {objs} {bg}."
    else:
        text = f"{bg[0].upper() + bg[1:]}, {objs}."
    text = text[0].upper() + text[1:]
    return text + _CAMERA[rng.integers(len(_CAMERA))]


def training_text(spec: ClipSpec, rng: np.random.Generator, wording: str = "template") -> str:
    """What the model is trained on for one clip: the short title, the plain prompt or a long caption.

    With wording "rich" or "full" the long captions (65% of texts) come from the vocabularies, so the
    model also keeps seeing the template words the prompt enhancer writes.
    """
    u = rng.random()
    if u < 0.15:
        return spec.title
    if u < 0.35 and spec.kind == "shapes" and len(spec.objects) == 1:
        o = spec.objects[0]
        return simple_prompt(o.colour, o.shape, o.motion, spec.background)
    return caption(spec, rng, wording)
