"""How far apart the text encoder puts synonyms: cosine of pooled MiniLM embeddings.

For each attribute value, the template prompt ("a red circle moving left on a black background")
is compared with the same prompt where that attribute is worded by each of its synonyms (the
vocabularies' train and held-out wordings) and by each *other* value's template word. If the
encoder grouped synonyms, a synonym would sit closer to the template than another value does;
"synonym_closer" is the share of (synonym, other value) pairs where it does. Writes JSON.

    python benchmarks/text_distances.py [--out benchmarks/results/text_distances.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from tessera.data.world.captions import simple_prompt
from tessera.data.world.wording import all_wordings
from tessera.enhance import CANONICAL_MOTION
from tessera.models.text import TextEncoder

BASE = {"colour": "red", "shape": "circle", "motion": "left", "background": "black"}


def _word(attribute: str, value: str) -> str:
    """How the template prompt words a value ("left" -> "moving left")."""
    return CANONICAL_MOTION[value] if attribute == "motion" else value


def _prompt(attrs: dict[str, str], attribute: str, wording: str) -> str:
    template = simple_prompt(attrs["colour"], attrs["shape"], attrs["motion"], attrs["background"])
    return template.replace(_word(attribute, attrs[attribute]), wording, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/text_distances.json")
    args = ap.parse_args()
    enc = TextEncoder()
    pooled = lambda texts: torch.nn.functional.normalize(enc(texts).pooled, dim=-1)  # (B, D), unit length
    result = {}
    for attribute in BASE:
        words = all_wordings(attribute)
        canonical = sorted(set(words.values()))
        syn_cos, other_cos, closer = [], [], []
        for value in canonical:
            attrs = BASE | {attribute: value}
            if attribute == "motion" and value == "spinning":
                attrs["shape"] = "square"
            template = _prompt(attrs, attribute, _word(attribute, value))
            synonyms = [w for w, v in words.items() if v == value and w != _word(attribute, value)]
            others = [_prompt(attrs, attribute, _word(attribute, o)) for o in canonical if o != value]
            vecs = pooled([template] + [_prompt(attrs, attribute, w) for w in synonyms] + others)
            cos = (vecs[1:] @ vecs[0]).numpy()
            s, o = cos[: len(synonyms)], cos[len(synonyms) :]
            syn_cos += s.tolist()
            other_cos += o.tolist()
            closer += [float(a > b) for a in s for b in o]
        result[attribute] = {
            "synonym_cos_mean": float(np.mean(syn_cos)),
            "synonym_cos_min": float(np.min(syn_cos)),
            "other_value_cos_mean": float(np.mean(other_cos)),
            "synonym_closer": float(np.mean(closer)),
            "synonyms": len(syn_cos),
        }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
