"""Prompt enhancers: a freely worded prompt -> the caption style the model was trained on (R12).

    enhancer = RuleEnhancer()
    e = enhancer.enhance("a crimson ball drifting to the left against pitch black")
    e.text      # "a red circle moving left on a black background"
    e.mapped    # {"crimson": "red", "ball": "circle", "drifting to the left": "left", "pitch black": "black"}
    e.unknown   # words it could not map; they are kept at the end of `text`

An enhancer never adds an attribute the prompt did not name: no background named, none
written. `RuleEnhancer` (the default) reads the vocabularies of `tessera/data/world/vocab` and
repairs typos (a few edits, never turning a real word into another); `LMEnhancer(folder)` asks a local `transformers` causal
LM and keeps its answer only when it names nothing the prompt did not.
"""

from __future__ import annotations

import difflib
import functools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tessera.data.world.wording import ATTRIBUTES, all_wordings, vocab

log = logging.getLogger(__name__)

CANONICAL_MOTION = {
    "left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down",
    "bouncing": "bouncing", "growing": "growing", "shrinking": "shrinking", "spinning": "spinning",
    "still": "standing still",
}  # fmt: skip
_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")
MAX_PHRASE_WORDS = 6


@dataclass
class Enhanced:
    """One rewritten prompt. mapped: words as typed (after typo repair) -> canonical value; unknown: words kept as typed."""

    text: str
    mapped: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    objects: list[dict[str, str]] = field(default_factory=list)  # per object: colour, shape, motion (those named)
    background: str | None = None
    source: str = "rule"  # "rule", "lm", or "lm-rejected" (the LM added something; the rule result is used)


class PromptEnhancer(Protocol):
    def enhance(self, prompt: str) -> Enhanced: ...


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[dict[tuple[str, ...], tuple[str, str]], frozenset[str], frozenset[str]]:
    """(phrase words -> (attribute, value), content words for typo repair, filler words)."""
    phrases: dict[tuple[str, ...], tuple[str, str]] = {}
    for attribute in ATTRIBUTES:
        for wording, value in all_wordings(attribute).items():
            phrases[tuple(_WORD.findall(wording.lower()))] = (attribute, value)
    content = frozenset(w for p in phrases for w in p)
    return phrases, content, frozenset(vocab()["filler"])


@functools.lru_cache(maxsize=1)
def _one_word_off() -> dict[tuple[int, int, tuple[str | None, ...]], list[tuple[str, tuple[str, str]]]]:
    """Phrases of 2+ words by (length, position of one word, the phrase with that word blanked):
    [(the blanked word, (attribute, value))], for repairing a word from the words around it."""
    index: dict = {}
    for words, hit in _tables()[0].items():
        for j in range(len(words) if len(words) > 1 else 0):
            key = (len(words), j, words[:j] + (None,) + words[j + 1 :])
            index.setdefault(key, []).append((words[j], hit))
    return index


@functools.lru_cache(maxsize=1)
def _english() -> frozenset[str]:
    """Whole words of the bundled text encoder's WordPiece vocabulary (about 22k English words and
    names): a typed word found there is a word, not a typo, and is never repaired into another."""
    try:
        from tessera.models.text import default_model_path

        lines = (Path(default_model_path()) / "vocab.txt").read_text(encoding="utf-8").split("\n")
    except (RuntimeError, OSError) as e:  # no word list: every unknown word is a repair candidate
        log.warning("prompt enhancer: no English word list (%s); typo repair may touch real words", e)
        return frozenset()
    return frozenset(w for w in lines if w.isascii() and w.isalpha())


@functools.lru_cache(maxsize=1)
def _by_first_letter() -> dict[str, tuple[str, ...]]:
    """Vocabulary and filler words grouped by their first letter, sorted (so ties break the same way)."""
    _, known, filler = _tables()
    groups: dict[str, list[str]] = {}
    for w in sorted(known | filler):
        groups.setdefault(w[0], []).append(w)
    return {k: tuple(v) for k, v in groups.items()}


def edit_distance(a: str, b: str, substitution: int = 1) -> int:
    """Optimal string alignment distance: an inserted, dropped or swapped (neighbours) letter costs 1,
    a substituted one `substitution`."""
    prev2, prev = [], list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = substitution if a[i - 1] != b[j - 1] else 0
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def typo_distance(typed: str, word: str) -> int:
    """Edits from `word` to `typed`. In a typed word of 3 or 4 letters a changed letter counts 2, so a
    short foreign or unknown word ("blut", "orc") is not read as a vocabulary word ("blue", "orb")."""
    return edit_distance(typed, word, substitution=2 if len(typed) <= 4 else 1)


def typo_budget(word: str) -> int:
    """Edits a misspelling of this length may carry: 1 up to 7 letters, 2 from 8."""
    return 1 if len(word) < 8 else 2


SUFFIXES = ("ing", "ed", "es", "s", "er", "ers", "est", "ly")
PREFIXES = ("un", "re")


def is_word(word: str) -> bool:
    """An English word: in the word list, or an inflection of one ("grooming" from "groom", "hopped"
    from "hop", "baking" from "bake"), or one with "un" or "re" before it ("unboxing")."""
    words = _english()
    if word in words:
        return True
    if word.startswith(PREFIXES) and len(word) > 5 and is_word(word[2:]):
        return True
    for suffix in SUFFIXES:
        stem = word[: -len(suffix)]
        if word.endswith(suffix) and len(stem) >= 3:
            doubled = len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] in "bdgklmnprtz" and stem[-3] in "aeiou"
            undoubled = stem[:-1] if doubled else stem
            if stem in words or stem + "e" in words or undoubled in words:
                return True
    return False


@functools.lru_cache(maxsize=8192)
def _closest(word: str) -> str:
    """The vocabulary (or filler) word a misspelling most likely means, else the word itself.

    Candidates share the first letter (people rarely get that wrong) and lie within `typo_budget`
    edits (`typo_distance`); the fewest edits win, then the higher difflib ratio, then the
    alphabet, so the answer never depends on the order of the vocabularies.
    """
    budget = typo_budget(word)
    scored = [
        (d, -difflib.SequenceMatcher(None, word, w).ratio(), w)
        for w in _by_first_letter().get(word[0], ())
        if abs(len(w) - len(word)) <= budget and (d := typo_distance(word, w)) <= budget
    ]
    return min(scored)[2] if scored else word


class RuleEnhancer:
    """Dictionary rewriting from the vocabularies, longest phrase first, with typo repair.

    A typed word of 3+ letters that is neither in the vocabularies nor an English word (`is_word`)
    is read as the closest vocabulary word (`_closest`). A word that is still unknown, even a real
    word such as "con", is read as a phrase's word when the rest of that phrase is there exactly
    ("con shape" -> "coin shape") and it is one edit away with the same first letter.

    repair_typos: False reads only the words as typed.
    """

    def __init__(self, repair_typos: bool = True):
        self.repair_typos = repair_typos

    def parse(self, prompt: str) -> tuple[list[tuple[str, str, str]], list[str]]:
        """Matches in order as (attribute, value, phrase) and the words no phrase covered (fillers dropped).

        Typos are repaired only in a prompt that names something in the vocabularies as typed, or
        two things once repaired: a prompt in another language or about something else is read as
        typed, so a lone word such as "orang" (Indonesian for person) never turns into a colour.
        """
        typed = split_words(prompt)
        exact = self._parse(typed, repair=False)
        if not self.repair_typos:
            return exact
        repaired = self._parse(typed, repair=True)
        return repaired if exact[0] or len(repaired[0]) >= 2 else exact

    def _parse(self, typed: list[str], repair: bool) -> tuple[list[tuple[str, str, str]], list[str]]:
        phrases, known, filler = _tables()
        words = [_repaired(w, known, filler) if repair else w for w in typed]
        matches, unknown, i = [], [], 0
        while i < len(words):
            n, hit = _match(typed, words, i, phrases, known, filler, repair)
            if hit:
                matches.append((*hit, " ".join(words[i : i + n])))
                i += n
                continue
            if words[i] not in filler:
                unknown.append(words[i])
            i += 1
        return matches, unknown

    def enhance(self, prompt: str) -> Enhanced:
        matches, unknown = self.parse(prompt)
        objects, background = group_objects(matches)
        mapped = {phrase: value for _, value, phrase in matches}
        if not objects and background is None:
            return Enhanced(prompt, mapped, unknown, [], None)  # nothing to map: the prompt as typed
        text = canonical_text(objects, background)
        if unknown:
            log.info("prompt enhancer kept unmapped words: %s", " ".join(unknown))
            text += ", " + " ".join(unknown)
        return Enhanced(text, mapped, unknown, objects, background)


def split_words(prompt: str) -> list[str]:
    """Lower-case words of a prompt. A hyphenated word the vocabularies do not hold, made of words
    they do, is read as its parts ("red-circle" -> "red", "circle"); others stay whole ("off-white",
    "square-shaped", "well-known")."""
    _, known, filler = _tables()
    words = []
    for w in _WORD.findall(prompt.lower()):
        parts = w.split("-")
        split = len(parts) > 1 and w not in known and all(p in known or p in filler for p in parts)
        words.extend(parts if split else [w])
    return words


def _repaired(word: str, known: frozenset[str], filler: frozenset[str]) -> str:
    """The word, or the vocabulary word it misspells when it is neither known nor English (3+ letters)."""
    if word in known or word in filler or len(word) < 3 or is_word(word):
        return word
    return _closest(word)


def _match(
    typed: list[str],
    words: list[str],
    i: int,
    phrases: dict,
    known: frozenset[str],
    filler: frozenset[str],
    repair: bool,
) -> tuple[int, tuple[str, str] | None]:
    """The longest phrase at word i of `words` (the typed words after single-word repair): (its
    length, (attribute, value)); a word typed one edit off a phrase's word is set to it in place
    when the rest of the phrase is there (class docstring). (1, None): no phrase starts here."""
    longest = min(MAX_PHRASE_WORDS, len(words) - i)
    for n in range(longest, 0, -1):
        hit = phrases.get(tuple(words[i : i + n]))
        if hit:
            return n, hit
    if not repair:
        return 1, None
    for n in range(longest, 1, -1):
        for j in range(n):
            word = typed[i + j]  # as typed: its single-word repair may have picked another word
            if word in known or word in filler or len(word) < 3:
                continue
            key = (n, j, tuple(words[i : i + j]) + (None,) + tuple(words[i + j + 1 : i + n]))
            for meant, hit in _one_word_off().get(key, []):
                if meant[0] == word[0] and typo_distance(word, meant) == 1:
                    words[i + j] = meant
                    return n, hit
    return 1, None


def group_objects(matches: list[tuple[str, str, str]]) -> tuple[list[dict[str, str]], str | None]:
    """Attribute matches in prompt order -> objects (a new one starts when an attribute repeats) and the background."""
    objects: list[dict[str, str]] = []
    background = None
    for attribute, value, _ in matches:
        if attribute == "background":
            background = background or value
            continue
        current = objects[-1] if objects else None
        # a colour after a complete object, or any attribute the current object already has, starts a new one
        starts_new = current is None or attribute in current or (attribute == "colour" and "shape" in current)
        if starts_new:
            objects.append({})
        objects[-1][attribute] = value
    return objects, background


def canonical_text(objects: list[dict[str, str]], background: str | None) -> str:
    """The template wording: "a red circle moving left and a blue square on a navy background"."""
    parts = []
    for o in objects:
        words = [o["colour"]] if "colour" in o else []
        words.append(o.get("shape", "shape"))
        if "motion" in o:
            words.append(CANONICAL_MOTION[o["motion"]])
        parts.append("a " + " ".join(words))
    text = " and ".join(parts) if parts else ""
    if background:
        text = f"{text} on a {background} background".strip()
    return text


def named_attributes(e: Enhanced) -> set[tuple[str, str]]:
    """(attribute, value) pairs an enhanced prompt names, for comparing two readings of a prompt."""
    pairs = {(k, v) for o in e.objects for k, v in o.items()}
    return pairs | ({("background", e.background)} if e.background else set())


PROMPT_TEMPLATE = (
    "Rewrite the video prompt in the form 'a <colour> <shape> <motion> on a <background> background'. "
    "Use only what the prompt says; leave out anything it does not name.\nPrompt: {prompt}\nRewritten:"
)


class LMEnhancer:
    """A local `transformers` causal LM folder (save_pretrained output) rewrites the prompt.

    Its answer is parsed with the rule vocabularies; when it names an attribute the prompt
    does not (or changes one), the rule enhancer's rewrite is used instead (source "lm-rejected").
    """

    def __init__(self, folder: str | Path, max_new_tokens: int = 40, template: str = PROMPT_TEMPLATE):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            from tessera.errors import InputError

            raise InputError(f"{folder} has no config.json; give a folder written by save_pretrained of a causal LM")
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
        self.max_new_tokens, self.template = max_new_tokens, template
        self.rules = RuleEnhancer()

    def generate(self, prompt: str) -> str:
        """The LM's continuation of the template, first line only (greedy, so the same prompt gives the same text)."""
        import torch

        ids = self.tokenizer(self.template.format(prompt=prompt), return_tensors="pt")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(
                **ids, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad
            )  # (1, prompt + new tokens)
        text = self.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        return text.strip().split("\n")[0].strip()

    def enhance(self, prompt: str) -> Enhanced:
        base = self.rules.enhance(prompt)
        answer = self.generate(prompt)
        reading = self.rules.enhance(answer) if answer else None
        if reading is None or not named_attributes(reading) or not named_attributes(reading) <= named_attributes(base):
            log.info("LM rewrite %r names attributes the prompt does not; using the rule rewrite", answer)
            base.source = "lm-rejected"
            return base
        return Enhanced(answer, base.mapped, base.unknown, reading.objects, reading.background, source="lm")
