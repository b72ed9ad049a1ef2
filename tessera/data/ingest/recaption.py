"""Recaptioning real videos: short or missing titles become long, detailed captions.

Two captioners behind one interface, `captions(frames, title, facts, seed) -> list[str]`:

* `RuleCaptioner` (default): title words plus facts measured by the filters (duration,
  aspect, brightness, dominant colour, plain background, camera motion, pace), in varied wording;
* `VisionLanguageCaptioner`: an image-to-text `transformers` model (GIT, BLIP, ...) loaded
  from a local folder, describing the middle frame; the measured facts are appended.

A title that is already long (`long_title_words` or more) is kept as a caption as it is.
The wording is drawn from a generator seeded by the clip id, so a rerun gives the same text.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Protocol

import numpy as np

from tessera.data.ingest.probe import clip_times, read_frames
from tessera.data.ingest.record import ClipRecord
from tessera.data.ingest.sources import title_of


class Captioner(Protocol):
    name: str

    def captions(self, frames: np.ndarray, title: str, facts: dict, seed: int) -> list[str]:
        """Long captions of one clip; frames uint8 (T, H, W, 3) sampled from the clip."""
        ...


def text_seed(key: str) -> int:
    """A seed from a string that is the same in every process (Python's hash() is not)."""
    return zlib.crc32(key.encode())


# ----------------------------------------------------------------------------- facts -> phrases


def aspect_word(width_px: int, height_px: int) -> str:
    r = width_px / max(1, height_px)
    if r > 2.0:
        return "ultra-wide"
    if r > 1.15:
        return "landscape"
    if r < 0.87:
        return "portrait"
    return "square"


def brightness_phrase(mean_luma: float, rng: np.random.Generator) -> str:
    if mean_luma < 50:
        return str(rng.choice(["dimly lit", "low-key, mostly dark", "moody and dark"]))
    if mean_luma < 110:
        return str(rng.choice(["softly lit", "evenly exposed", "in moderate light"]))
    if mean_luma < 170:
        return str(rng.choice(["well lit", "brightly lit", "in clear light"]))
    return str(rng.choice(["very bright", "high-key and bright", "bathed in light"]))


def pace_phrase(motion_pct: float, rng: np.random.Generator) -> str:
    if motion_pct < 0.5:
        return str(rng.choice(["almost nothing moves", "the scene is nearly still", "there is very little movement"]))
    if motion_pct < 2.0:
        return str(rng.choice(["movement is gentle", "things move slowly", "the motion is calm and slow"]))
    if motion_pct < 6.0:
        return str(rng.choice(["there is steady movement", "the scene moves at a moderate pace", "motion is clear"]))
    return str(rng.choice(["the scene is lively and fast", "there is a lot of fast movement", "motion is quick"]))


_CAMERA = {
    "static": ("The camera is static.", "Shot from a fixed camera.", "The camera does not move."),
    "hand-held": ("The camera is hand-held but steady.", "A hand-held shot with slight sway."),
    "shaky": ("The camera shakes noticeably.", "A shaky hand-held shot."),
    "pan left": ("The camera pans to the left.", "A slow pan towards the left."),
    "pan right": ("The camera pans to the right.", "A slow pan towards the right."),
    "tilt up": ("The camera tilts upwards.", "The view drifts upwards."),
    "tilt down": ("The camera tilts downwards.", "The view drifts downwards."),
}


def facts_sentence(facts: dict, rng: np.random.Generator) -> str:
    """One or two sentences with the measured facts of a clip."""
    colour = facts.get("colour", "")
    tone = (
        f"{colour} tones dominate the frame"
        if colour and colour not in ("black", "dark gray", "gray", "white")
        else f"the palette is mostly {colour or 'neutral'}"
    )
    light = brightness_phrase(float(facts.get("mean_luma", 100)), rng)
    pace = pace_phrase(float(facts.get("motion", 1.0)), rng)
    cam = rng.choice(_CAMERA.get(facts.get("camera", "static"), _CAMERA["static"]))
    forms = (
        f"The shot is {light}; {tone}, and {pace}. {cam}",
        f"It is {light}, {tone}, and {pace}. {cam}",
        f"{tone[0].upper() + tone[1:]} in this {light} footage, and {pace}. {cam}",
    )
    return str(forms[rng.integers(len(forms))])


def _subject(title: str) -> str:
    words = " ".join(title.split())
    return words if words else "an everyday scene"


# ----------------------------------------------------------------------------- captioners


class RuleCaptioner:
    """Title words + measured facts -> long captions, in varied wording. No model, no frames needed."""

    name = "rule"

    def __init__(self, n: int = 2):
        self.n = n

    def captions(self, frames: np.ndarray | None, title: str, facts: dict, seed: int) -> list[str]:
        rng = np.random.default_rng(seed)
        subject = _subject(title)
        backdrop = facts.get("backdrop", "")
        if backdrop and "background" not in subject:
            subject += f" on a {backdrop} background"
        duration = float(facts.get("duration_s", 0))
        aspect = aspect_word(int(facts.get("width_px", 1)), int(facts.get("height_px", 1)))
        out: list[str] = []
        leads = (
            f"A {aspect} video of {subject}.",
            f"Footage showing {subject}, filmed in a {aspect} frame.",
            f"{subject[0].upper() + subject[1:]}, seen in a {duration:.0f}-second {aspect} clip.",
            f"A short clip about {subject}.",
        )
        order = rng.permutation(len(leads))
        for i in range(self.n):
            out.append(f"{leads[order[i % len(leads)]]} {facts_sentence(facts, rng)}")
        return out


class VisionLanguageCaptioner:
    """An image-to-text model from a local folder (saved with `save_pretrained`), run on the middle frame."""

    def __init__(self, path: str | Path, max_new_tokens: int = 40):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"captioner folder {path} has no config.json; pass a folder saved with save_pretrained")
        self.processor = AutoProcessor.from_pretrained(str(path))
        self.model = AutoModelForImageTextToText.from_pretrained(str(path)).eval()
        self.name = f"vlm:{path.name}"
        self.max_new_tokens = max_new_tokens
        self._torch = torch

    def describe(self, image: np.ndarray) -> str:
        """Greedy caption of one uint8 (H, W, 3) image."""
        with self._torch.no_grad():
            inputs = self.processor(images=[image], return_tensors="pt")
            ids = self.model.generate(
                pixel_values=inputs["pixel_values"], max_new_tokens=self.max_new_tokens, do_sample=False
            )
        return " ".join(self.processor.batch_decode(ids, skip_special_tokens=True)[0].split())

    def captions(self, frames: np.ndarray, title: str, facts: dict, seed: int) -> list[str]:
        rng = np.random.default_rng(seed)
        seen = self.describe(frames[len(frames) // 2]) or _subject(title)
        seen = seen[0].upper() + seen[1:]
        backdrop = f" The background is plain {facts['backdrop']}." if facts.get("backdrop") else ""
        return [f"{seen.rstrip('.')}. {facts_sentence(facts, rng)}{backdrop}"]


_CAPTIONERS: dict[str, Captioner] = {}


def get_captioner(model_path: str = "") -> Captioner:
    """The rule captioner, or the vision-language captioner in `model_path`; one per process."""
    key = model_path or "rule"
    if key not in _CAPTIONERS:
        _CAPTIONERS[key] = VisionLanguageCaptioner(model_path) if model_path else RuleCaptioner()
    return _CAPTIONERS[key]


def clip_texts(
    captioner: Captioner, frames: np.ndarray | None, title: str, facts: dict, key: str, long_title_words: int = 10
) -> dict:
    """Caption fields of one clip: the title, its long caption and every candidate training text.

    A short or missing title is expanded; a long title is kept as one of the captions.
    """
    title = " ".join(title.split())
    caps = captioner.captions(frames, title, facts, text_seed(key))
    texts = ([title] if title else []) + caps
    if len(title.split()) >= long_title_words:
        caption = title
    else:
        caption = caps[0]
    return {"title": title, "caption": caption, "captioner": captioner.name, "texts": list(dict.fromkeys(texts))}


def caption_clip(clip: ClipRecord, model_path: str, long_title_words: int, fps: float) -> dict:
    """Stage 4: title, long captions and candidate texts of one clip from its title and `clip.facts`."""
    captioner = get_captioner(model_path)
    frames = None
    if model_path:
        frames = read_frames(clip.source, clip_times(clip.start_s, clip.end_s, fps, 64))
    return clip_texts(captioner, frames, title_of(clip.source), clip.facts or {}, clip.id, long_title_words)
