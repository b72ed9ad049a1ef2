"""Write the paraphrase and two-object prompt sets of `tessera eval --set` (tessera/eval_sets/*.jsonl).

Every prompt is drawn from the *held-out* wordings and sentence shapes of
tessera/data/world/vocab/wording.json, which no training caption uses; a share gets typos. The
files are committed: rerun this only when the vocabularies change, and say so in the model card.

    python benchmarks/make_eval_sets.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tessera.data.world.scenes import BACKGROUNDS, all_combos, held_out_combos
from tessera.data.world.wording import background_phrase, object_phrase, typo, vocab

OUT = Path(__file__).resolve().parents[1] / "tessera" / "eval_sets"
STYLES = ("question", "request", "exclamation", "casual", "polite", "imagine", "background-first", "fragment")
TYPO_SHARE = 0.25  # prompts that also get typos
TYPO_RATE = 0.2  # share of 4+-letter words misspelt in those


def _sentence(objs: str, bg: str, rng: np.random.Generator) -> tuple[str, str]:
    """One held-out sentence shape around the phrases, and the style it belongs to (STYLES, in vocab order)."""
    shapes = vocab()["sentences"]["heldout"]
    k = int(rng.integers(len(shapes)))
    text = shapes[k].format(obj=objs, bg=bg, Bg=bg[:1].upper() + bg[1:])
    return text[:1].upper() + text[1:], STYLES[k]


def paraphrase_set(n: int = 336, seed: int = 15) -> list[dict]:
    rng = np.random.default_rng(seed)
    combos, held = all_combos(), held_out_combos()
    rows = []
    for i in range(n):
        colour, shape, motion = combos[i % len(combos)] if i < len(combos) else combos[int(rng.integers(len(combos)))]
        background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
        objs = object_phrase(colour, shape, motion, rng, "heldout")
        text, style = _sentence(objs, background_phrase(background, rng, "heldout"), rng)
        typos = bool(rng.random() < TYPO_SHARE)
        if typos:
            text = typo(text, rng, TYPO_RATE)
        row = dict(prompt=text, colour=colour, shape=shape, motion=motion, background=background)
        rows.append(row | dict(style=style, typos=typos, held_out_combo=(colour, shape, motion) in held))
    order = rng.permutation(len(rows))  # mixed order, so the first N prompts cover every style
    return [rows[j] for j in order]


def two_object_set(n: int = 60, seed: int = 16) -> list[dict]:
    rng = np.random.default_rng(seed)
    combos = all_combos()
    rows = []
    while len(rows) < n:
        a, b = combos[int(rng.integers(len(combos)))], combos[int(rng.integers(len(combos)))]
        if a[0] == b[0]:
            continue  # the judge tells the two objects apart by colour
        background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
        objs = object_phrase(*a, rng, "heldout") + " and " + object_phrase(*b, rng, "heldout")
        text, style = _sentence(objs, background_phrase(background, rng, "heldout"), rng)
        objects = [dict(colour=c, shape=s, motion=m) for c, s, m in (a, b)]
        rows.append(dict(prompt=text, objects=objects, background=background, style=style))
    return rows


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("paraphrase", paraphrase_set()), ("two_object", two_object_set())):
        path = OUT / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"{path}: {len(rows)} prompts")


if __name__ == "__main__":
    main()
