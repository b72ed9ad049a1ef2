"""Prompt enhancers: a freely worded prompt -> the caption style the model was trained on (R12).

    enhancer = RuleEnhancer()
    e = enhancer.enhance("a crimson ball drifting to the left against pitch black")
    e.text      # "a red circle moving left on a black background"
    e.mapped    # {"crimson": "red", "ball": "circle", "drifting to the left": "left", "pitch black": "black"}
    e.unknown   # words it could not map; they are kept at the end of `text`

An enhancer never adds an attribute the prompt did not name: no background named, none
written. `RuleEnhancer` (the default) reads the vocabularies of `tessera/data/world/vocab` and
corrects typos by fuzzy matching; `LMEnhancer(folder)` asks a local `transformers` causal
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


@functools.lru_cache(maxsize=4096)
def _closest(word: str, cutoff: float) -> str:
    """The vocabulary word a misspelling most likely means (same first letter, length within 2), else the word."""
    _, known, _ = _tables()
    pool = [w for w in known if w[0] == word[0] and abs(len(w) - len(word)) <= 2]
    close = difflib.get_close_matches(word, pool, n=1, cutoff=cutoff)
    return close[0] if close else word


class RuleEnhancer:
    """Dictionary rewriting from the vocabularies, longest phrase first, with typo repair.

    typo_cutoff: how close (difflib ratio) a misspelt word of 4+ letters must be to a vocabulary word.
    """

    def __init__(self, typo_cutoff: float = 0.8):
        self.typo_cutoff = typo_cutoff

    def _repair(self, word: str, known: frozenset[str], filler: frozenset[str]) -> str:
        if word in known or word in filler or len(word) < 4:
            return word
        return _closest(word, self.typo_cutoff)

    def parse(self, prompt: str) -> tuple[list[tuple[str, str, str]], list[str]]:
        """Matches in order as (attribute, value, phrase) and the words no phrase covered (fillers dropped)."""
        phrases, known, filler = _tables()
        words = [self._repair(w, known, filler) for w in _WORD.findall(prompt.lower())]
        matches, unknown, i = [], [], 0
        while i < len(words):
            for n in range(min(MAX_PHRASE_WORDS, len(words) - i), 0, -1):
                hit = phrases.get(tuple(words[i : i + n]))
                if hit:
                    matches.append((*hit, " ".join(words[i : i + n])))
                    i += n
                    break
            else:
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
