"""Rich wordings of the shapes world, read from `tessera/data/world/vocab/wording.json`.

The vocabularies (colour names and shades, shape nouns and descriptions, motion verbs and
phrases, background wordings, sentence shapes) are data, not code. Each list is split:

* "train": what training captions draw from (`rich_caption`);
* "heldout": never in a "rich" training text; only the paraphrase benchmark and the prompt
  enhancer's dictionary use them, so the benchmark measures wording the model never saw.

The split "all" (wording "full" of a training run) draws attribute words from both lists,
while sentence shapes and background frames stay "train": the model learns every word of
the vocabularies, and the paraphrase benchmark's sentences stay ones it never read.

`typo` adds the small rate of misspellings people make (swapped, dropped or doubled letters).
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

ATTRIBUTES = ("colour", "shape", "motion", "background")
SPLITS = ("train", "heldout")


@functools.lru_cache(maxsize=1)
def vocab() -> dict:
    """The parsed vocabulary file (cached; treat as read-only)."""
    text = (resources.files("tessera") / "data" / "world" / "vocab" / "wording.json").read_text(encoding="utf-8")
    return json.loads(text)


def wordings(attribute: str, value: str, split: str = "train") -> list[str]:
    """Every wording of one attribute value ("colour", "red") in one split ("all": both); the canonical word is train[0]."""
    lists = vocab()[attribute][value]
    return lists["train"] + lists["heldout"] if split == "all" else list(lists[split])


def _frames(kind: str, split: str) -> list[str]:
    """Sentence shapes or background frames of a split; "all" keeps the training ones."""
    return vocab()[kind]["train" if split == "all" else split]


def all_wordings(attribute: str, split: str | None = None) -> dict[str, str]:
    """Wording -> canonical value for one attribute, over one split (or both when None)."""
    splits = SPLITS if split is None else (split,)
    return {w: value for value, lists in vocab()[attribute].items() for s in splits for w in lists[s]}


def _pick(items: list[str], rng: np.random.Generator) -> str:
    return items[int(rng.integers(len(items)))]


def article(phrase: str) -> str:
    """ "a" or "an" for the word that follows."""
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def object_phrase(colour: str, shape: str, motion: str, rng: np.random.Generator, split: str = "train") -> str:
    """ "a crimson disc sliding leftwards": one object in wordings drawn from `split`."""
    c = _pick(wordings("colour", colour, split), rng)
    s = _pick(wordings("shape", shape, split), rng)
    m = _pick(wordings("motion", motion, split), rng)
    return f"{article(c)} {c} {s} {m}"


def background_phrase(background: str, rng: np.random.Generator, split: str = "train") -> str:
    """ "against pitch black": a background wording inside one of the background frames."""
    frame = _pick(_frames("background_frames", split), rng)
    bg = _pick(wordings("background", background, split), rng)
    phrase = frame.format(bg=bg)
    return phrase.replace(" a a", " an a").replace(" a e", " an e").replace(" a i", " an i").replace(" a o", " an o")


def sentence(objects: str, background: str, rng: np.random.Generator, split: str = "train") -> str:
    """Put object and background phrases into one of the sentence shapes of `split`."""
    shape = _pick(_frames("sentences", split), rng)
    text = shape.format(obj=objects, bg=background, Bg=background[:1].upper() + background[1:])
    return text[:1].upper() + text[1:]


def rich_caption(spec, rng: np.random.Generator, split: str = "train", typo_rate: float = 0.0) -> str:
    """A caption of a shapes-world `ClipSpec` in rich wording (any number of objects), with typos at `typo_rate`."""
    objs = " and ".join(object_phrase(o.colour, o.shape, o.motion, rng, split) for o in spec.objects)
    text = sentence(objs, background_phrase(spec.background, rng, split), rng, split)
    camera = _pick(vocab()["camera"], rng)
    if camera and not text.endswith((".", "!", "?")):
        text += "."
    text += camera
    return typo(text, rng, typo_rate) if typo_rate > 0 else text


def typo(text: str, rng: np.random.Generator, rate: float) -> str:
    """Misspell each word of 4+ letters with probability `rate`: swap two neighbours, drop or double a letter."""
    words = text.split(" ")
    for i, w in enumerate(words):
        if len(w) < 4 or not w.isalpha() or rng.random() >= rate:
            continue
        j = int(rng.integers(1, len(w) - 1))  # never the first letter: people rarely get that wrong
        kind = int(rng.integers(3))
        if kind == 0:
            w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
        elif kind == 1:
            w = w[:j] + w[j + 1 :]
        else:
            w = w[:j] + w[j] + w[j:]
        words[i] = w
    return " ".join(words)
