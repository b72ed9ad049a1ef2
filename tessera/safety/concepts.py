"""Language-independent concepts for the prompt filter's classifier.

The classifier's sentence encoder (MiniLM) reads English only: a Russian or Korean sentence
lands somewhere it has never learned anything, so a prompt in another language without a listed
term used to pass. `data/concepts.tsv` maps everyday words of 25 languages onto ~55 concepts
(blood, child, beat, how-to, bomb, vermin, a protected group, food, nature, the shapes world ...).
The classifier reads which concepts a prompt names as features beside the embedding, learns
their weights mostly from English prompts, and the same weights apply when "кровь", "피" or
"دم" name the concept. Benign concepts count as much as harmful ones: they keep everyday scenes
in every language from being refused.

Terms follow the lexicon's rules (`lexicon.py`): folded like the prompt, trailing "-" marks a
stem, unspaced scripts match as substrings, Vietnamese and Thai keep their tones.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from tessera.safety.lexicon import Lexicon, allow_list, foreign_words, load_rows, without_toned
from tessera.safety.normalize import clean


@cache
def concept_rows() -> tuple[tuple[str, str, str], ...]:
    """(concept, term, language) rows of `data/concepts.tsv`."""
    text = resources.files("tessera.safety").joinpath("data", "concepts.tsv").read_text(encoding="utf-8")
    rows = [tuple(line.split("\t")) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    bad = [r for r in rows if len(r) != 3]
    if bad:
        raise ValueError(f"concepts.tsv rows need 3 tab-separated columns (concept, term, language), got {bad[0]!r}")
    return tuple(rows)


ALLOWED = "allowed"  # the prompt names an allow-listed thing ("bath bomb", "killer whale"), cut from the text read


def concept_names() -> tuple[str, ...]:
    """Every concept, in the order of first appearance in the data file, then `ALLOWED`."""
    return tuple(dict.fromkeys(r[0] for r in concept_rows())) + (ALLOWED,)


class Concepts:
    """`vector(prompt)` -> (K,) float32, 1 where the prompt names concept k of `names`, else 0.

    `names` is the order the classifier was trained with (kept in its weights' metadata); concepts
    the data file no longer has stay 0, new ones are not read until the classifier is retrained.
    """

    def __init__(self, names: tuple[str, ...], vocabulary: frozenset[str] = frozenset(), cache: Path | None = None):
        """`cache`: a folder where the built term index is kept for the next process (`Lexicon.remembered`)."""
        self.names = tuple(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        rows = [r for r in concept_rows() if r[0] in self.index] if self.names else []
        allow = [r for r in load_rows() if r[0] == "allow"]  # "bath bomb", "폭탄주": masked here too
        self.lexicon = Lexicon.remembered(rows + allow, vocabulary, cache) if rows else None

    def found(self, prompt: str, text: str | None = None) -> set[str]:
        """The concepts named in `prompt`; `text` is its normalised reading if already made (default `clean`)."""
        if self.lexicon is None:
            return set()
        cleaned = clean(prompt)
        text = cleaned if text is None else text
        matches = without_toned(prompt, text, self.lexicon.find(text, foreign_words(prompt)))
        if self.lexicon.accented:
            matches += self.lexicon.accented.find(clean(prompt, accents=True))
        found = {m.group for m in matches}
        if ALLOWED in self.index and allow_list().without_allowed(cleaned) != cleaned:
            # what is left of "how to make a bath bomb" reads like a weapons how-to; the feature says a thing was cut
            found.add(ALLOWED)
        return found

    def vector(self, prompt: str, text: str | None = None) -> np.ndarray:
        v = np.zeros(len(self.names), dtype=np.float32)
        for name in self.found(prompt, text):
            v[self.index[name]] = 1.0
        return v
