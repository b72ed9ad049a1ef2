"""The prompt filter (R15): refuses high-risk prompts before any compute, with the category and a reason.

Two layers read the normalised prompt (`normalize.clean`: homoglyphs, leetspeak, spacing, repeated
letters undone):

1. the lexicon (`lexicon.py`): high-precision terms and stems in 34 languages, a list of public figures,
   and a few rules (a child named together with sexual or violent terms; how-to wording about a weapon);
2. a linear classifier over the text encoder's pooled embeddings (the MiniLM the model uses, so
   paraphrases land near their meaning; its last layer and its middle one, which still keeps more of
   which words are there) and hashed character n-grams (so misspellings keep most of
   their features). Each category has its own threshold, chosen on the validation split.
   Prompts longer than `segment_words` words are also scored clause by clause, so a harmless
   preamble cannot dilute a harmful clause.

The weights (`prompt_filter.safetensors`) are rebuilt by `python -m tessera.safety.train_filter`.
"""

from __future__ import annotations

import logging
import re
import zlib
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from tessera.errors import UnsafePromptError
from tessera.safety.concepts import Concepts
from tessera.safety.keys import tessera_home
from tessera.safety.lexicon import CATEGORIES, LexicalResult, Lexicon, allow_list, benign_words, load_rows
from tessera.safety.normalize import clean, memo_path, remembered

log = logging.getLogger(__name__)

CLASSES = ("benign", *CATEGORIES)  # classifier outputs, in this order
DESCRIPTIONS = {
    "sexual": "sexual content or nudity",
    "minors": "sexual or violent content involving minors",
    "violence": "graphic violence or gore",
    "self_harm": "self-harm or suicide",
    "weapons": "instructions for weapons or explosives",
    "hate": "hate or harassment",
    "real_people": "a realistic depiction of a real, named person",
}
_CLAUSE = re.compile(r"[.;,:!?]|\b(?:and|then|while|but|with|where|after|before)\b")
# Camera wording carries no risk, but "shot" pulled shapes-world prompts ("..., locked-off shot.") towards violence:
# the classifier reads the prompt without it (as `clean` writes it: hyphens are spaces).
_CAMERA = re.compile(
    r"\b(?:(?:a |an |one )?(?:(?:single |one )?(?:locked off|static|fixed|wide|close up|medium|long|tracking|"
    r"establishing|aerial|drone|overhead|continuous|slow motion|handheld|dolly|panning|tripod) )+shots?"
    r"|shot (?:with|on|from) (?:a |an )?(?:locked off|fixed|static|tripod|handheld)(?: tripod| camera)*"
    r"|(?:static|locked off|fixed) camera)\b"
)


@dataclass
class FilterConfig:
    ngram_dims: int = 4096  # hashed character n-gram buckets
    ngram_min: int = 3
    ngram_max: int = 5
    max_tokens: int = 128  # the filter reads more of a prompt than the generator's 32 tokens
    segment_words: int = 12  # longer prompts are also scored clause by clause
    concept_scale: float = 0.5  # the value of a concept feature the prompt names (chosen on the validation split)
    # encoder layers whose mean-pooled states are read (0 = embeddings, -1 = last): the last and the middle
    # one (chosen on the validation split, round 10); weights from before round 10 read (-1,)
    layers: tuple[int, ...] = (-1, 3)

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> FilterConfig:
        """The settings a weights file was trained with (its metadata holds each field as a string)."""
        values = {}
        for k, v in asdict(cls()).items():
            if k == "layers":
                values[k] = tuple(int(i) for i in meta.get(k, "-1").strip("()").split(",") if i.strip())
            elif k in meta:
                values[k] = type(v)(meta[k])
        return cls(**values)


@dataclass
class Decision:
    allowed: bool
    category: str | None  # one of CATEGORIES when refused
    score: float  # 1.0 for a lexical match, else the classifier's probability for `category` (or the highest)
    reason: str


def weights_path() -> Path:
    return Path(str(resources.files("tessera.safety").joinpath("prompt_filter.safetensors")))


def char_ngrams(text: str, cfg: FilterConfig) -> np.ndarray:
    """(ngram_dims,) log counts of hashed character n-grams of each word (with its boundaries), L2-normalised."""
    v = np.zeros(cfg.ngram_dims, dtype=np.float32)
    for word in text.split():
        w = f" {word} "
        for n in range(cfg.ngram_min, cfg.ngram_max + 1):
            for i in range(max(1, len(w) - n + 1)):
                v[zlib.crc32(w[i : i + n].encode()) % cfg.ngram_dims] += 1.0
    v = np.log1p(v)
    return v / max(float(np.linalg.norm(v)), 1e-8)


@torch.inference_mode()
def embed(
    encoder, texts: list[str], max_tokens: int, layers: tuple[int, ...] = (-1,), batch_size: int = 64
) -> torch.Tensor:
    """(B, D * len(layers)) mean of each of the encoder's `layers`' token states over real tokens, each
    L2-normalised (index 0 is the embeddings, -1 the last layer).

    The same pooling as `TextEncoder`, reading up to `max_tokens` tokens. Texts run in batches of
    similar length (sorted by characters), each padded only to its own longest text, so a short
    prompt never pays for a long one's padding.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = [torch.empty(0)] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = encoder.tokenizer(
            [texts[i] for i in idx], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
        )
        ids, mask = batch["input_ids"].to(encoder.device), batch["attention_mask"].to(encoder.device)
        states = encoder.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        m = mask.cpu()[..., None].float()  # (b, L, 1)
        pooled = torch.cat(  # (b, D * len(layers))
            [
                torch.nn.functional.normalize((states[i].float().cpu() * m).sum(1) / m.sum(1).clamp_min(1), dim=-1)
                for i in layers
            ],
            dim=1,
        )
        for k, i in enumerate(idx):
            out[i] = pooled[k]
    return torch.stack(out)


def features(
    encoder, texts: list[str], cfg: FilterConfig, concepts: Concepts | None = None, prompts: list[str] | None = None
) -> torch.Tensor:
    """(B, D + ngram_dims + K) classifier input for already-normalised texts: the embedding, the n-grams and
    the K concepts each names (`concepts`, none when None), scaled by `cfg.concept_scale`. prompts: the raw
    prompt of each text (default the text), whose Vietnamese and Thai concepts are read with their tones."""
    grams = torch.from_numpy(np.stack([char_ngrams(t, cfg) for t in texts]))  # (B, ngram_dims)
    k = len(concepts.names) if concepts is not None else 0
    found = [concepts.vector(p, t) for p, t in zip(prompts or texts, texts)] if k else []
    found = torch.from_numpy(np.stack(found) if found else np.zeros((len(texts), k), np.float32))  # (B, K)
    return torch.cat([embed(encoder, texts, cfg.max_tokens, cfg.layers), grams, cfg.concept_scale * found], dim=1)


def classifier_text(prompt: str) -> str:
    """The normalised prompt as the classifier reads it: `clean`, then camera wording and the lexicon's
    allow-listed phrases ("naked mole rat", "suicide prevention", "bath bomb") removed."""
    text = clean(prompt)
    return allow_list().without_allowed(re.sub(r"\s+", " ", _CAMERA.sub(" ", text))).strip(" ,.") or text


def segments(text: str, cfg: FilterConfig) -> list[str]:
    """The normalised prompt, plus its clauses when it is longer than `segment_words` words."""
    if len(text.split()) <= cfg.segment_words:
        return [text]
    parts = [p.strip() for p in _CLAUSE.split(text) if p and len(p.split()) >= 2]
    return [text] + list(dict.fromkeys(parts))


def vocabulary(encoder) -> frozenset[str]:
    """Known words, never read as misspellings of a term: whole English words the encoder's tokenizer
    knows, and the words of the labelled benign prompts in 24 languages (`lexicon.benign_words`)."""
    return frozenset(w for w in encoder.tokenizer.get_vocab() if w.isalpha()) | benign_words()


class PromptFilter:
    """`check(prompt)` -> Decision; `enforce(prompt)` raises UnsafePromptError when refused.

    Pass the generator's `text_encoder` to share it (nothing is loaded twice); `PromptFilter.default()`
    is a cached instance with its own encoder.
    """

    def __init__(self, text_encoder=None, weights: str | Path | None = None):
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(weights) if weights else weights_path()
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        self._build(load_file(str(path)), meta, text_encoder)

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, torch.Tensor], metadata: dict[str, str], text_encoder=None
    ) -> PromptFilter:
        """A filter from weights in memory, as `train_filter.train` returns them, without writing a file."""
        flt = cls.__new__(cls)
        flt._build(tensors, metadata, text_encoder)
        return flt

    def _build(self, t: dict[str, torch.Tensor], meta: dict[str, str], text_encoder) -> None:
        self.cfg = FilterConfig.from_metadata(meta)
        self.weight, self.bias = t["weight"], t["bias"]  # (C, F), (C,)
        names = tuple(n for n in meta.get("concepts", "").split(",") if n)
        # the width of one layer's pooled state: the classifier reads len(layers) of them
        self.embed_dim = embed_dim = (self.weight.shape[1] - self.cfg.ngram_dims - len(names)) // len(self.cfg.layers)
        if text_encoder is not None and not _is_minilm(text_encoder, embed_dim):
            log.info("the given text encoder is not the MiniLM the filter was trained on; loading the MiniLM")
            text_encoder = None
        if text_encoder is None:
            from tessera.models.text import TextEncoder

            text_encoder = TextEncoder()
        self.encoder = text_encoder
        self.thresholds = dict(zip(CATEGORIES, t["thresholds"].tolist()))
        cache = tessera_home() / "cache"
        with remembered(memo_path(cache)):  # word lists cleaned and indexed once per installation
            vocab = vocabulary(text_encoder)
            self.lexicon = Lexicon.remembered(list(load_rows()), vocab, cache)
            self.concepts = Concepts(names, vocab, cache)

    @classmethod
    def default(cls) -> PromptFilter:
        return _default()

    def probabilities(self, texts: list[str], prompt: str | None = None) -> torch.Tensor:
        """(B, C) class probabilities for already-normalised texts (parts of `prompt`, when given)."""
        x = features(self.encoder, texts, self.cfg, self.concepts, [prompt] * len(texts) if prompt else None)
        return torch.softmax(x @ self.weight.T + self.bias, dim=-1)

    def scores(self, prompt: str) -> tuple[LexicalResult, torch.Tensor | None]:
        """The lexicon's result, and when it decides nothing the classifier's (C,) probabilities as `check`
        compares them with the thresholds: the highest of the whole prompt's and its clauses'."""
        lexical = self.lexicon.classify(prompt)
        if lexical.category:
            return lexical, None
        segs = segments(classifier_text(prompt), self.cfg)
        # the whole prompt alone, then its (shorter) clauses together: no clause is padded to the whole length
        parts = [self.probabilities(segs[:1], prompt)]
        parts += [self.probabilities(segs[1:], prompt)] if len(segs) > 1 else []
        return lexical, torch.cat(parts).amax(0)

    def check(self, prompt: str) -> Decision:
        if not clean(prompt):
            return Decision(True, None, 0.0, "empty prompt")  # nothing to refuse; the caller reports it as bad input
        lexical, probs = self.scores(prompt)
        if probs is None:
            return Decision(False, lexical.category, 1.0, f"matched {lexical.reason!r}")
        scores = {c: float(probs[i + 1]) for i, c in enumerate(CATEGORIES)}
        flagged = [c for c in CATEGORIES if scores[c] >= self.thresholds[c]]
        if not flagged:
            top = max(scores, key=scores.get)
            return Decision(True, None, scores[top], f"highest score {top} {scores[top]:.2f}")
        category = max(flagged, key=lambda c: scores[c] / self.thresholds[c])
        score = scores[category]
        reason = f"classifier score {score:.2f} for {category} >= threshold {self.thresholds[category]:.2f}"
        if category in ("sexual", "violence") and lexical.minor:
            category = "minors"  # a child is named: sexual or violent content involving minors
        return Decision(False, category, score, reason)

    def enforce(self, prompt: str) -> Decision:
        """Return the decision when allowed; raise UnsafePromptError(category, message) when refused."""
        d = self.check(prompt)
        if not d.allowed:
            log.info("prompt refused: %s (%s)", d.category, d.reason)
            raise UnsafePromptError(
                d.category,
                f"the prompt was refused by the safety filter: {DESCRIPTIONS[d.category]} (category {d.category}; "
                f"{d.reason}); Tessera does not generate this, rephrase the prompt without it",
            )
        return d


def _is_minilm(encoder, dim: int) -> bool:
    """The classifier reads MiniLM embeddings: another encoder (T5, CLIP, ...) cannot be shared."""
    cfg = getattr(encoder, "cfg", None)
    return (
        getattr(cfg, "kind", "minilm") == "minilm"
        and getattr(encoder, "dim", dim) == dim
        and hasattr(encoder, "tokenizer")
    )


@cache
def _default() -> PromptFilter:
    return PromptFilter()
