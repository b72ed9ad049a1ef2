"""Speed and accuracy of the default prompt enhancer on the paraphrase set (no model, no generation).

Times `RuleEnhancer.enhance` on every prompt of tessera/eval_sets/paraphrase.jsonl (after one
warm-up call that loads the vocabularies), and counts prompts whose rewrite names exactly the
intended colour, shape, motion and background, per wording style. Two more checks of typo repair:

- *Synthetic typos*: 600 rich captions of one-object clips (seed 12345), each 4+ letter word
  misspelt with probability 0.5 (`wording.typo`: swap, drop or double a letter) and 30% of the
  4-letter words missing their second letter ("blue" -> "bue"); the rewrite must name what the
  clean caption names. Reported with typo repair on and off.
- *Nothing invented*: every benign prompt of the prompt filter's data that is not about the
  shapes world (everyday scenes and near misses, in many languages); counts those where typo
  repair names an attribute that the words as typed do not.

Writes JSON.

    python benchmarks/enhance.py [--out benchmarks/results/enhance.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from tessera.data.world import BACKGROUNDS, all_combos
from tessera.data.world.scenes import spec_for
from tessera.data.world.wording import rich_caption, typo
from tessera.enhance import RuleEnhancer, named_attributes
from tessera.eval import paraphrase_cases
from tessera.safety.train_filter import load_prompts


def synthetic_typos(n: int = 600, seed: int = 12345) -> list[tuple[str, str]]:
    """(clean caption, misspelt caption) pairs of one-object clips (module docstring)."""
    rng, combos, backgrounds = np.random.default_rng(seed), all_combos(), list(BACKGROUNDS)
    pairs = []
    for k in range(n):
        spec = spec_for(*combos[rng.integers(len(combos))], backgrounds[rng.integers(len(backgrounds))], seed=k)
        clean = rich_caption(spec, rng, "train")
        words = typo(clean, rng, 0.5).split(" ")
        dropped = [w[0] + w[2:] if len(w) == 4 and w.isalpha() and rng.random() < 0.3 else w for w in words]
        pairs.append((clean, " ".join(dropped)))
    return pairs


def typo_checks() -> dict:
    on, off = RuleEnhancer(), RuleEnhancer(repair_typos=False)
    pairs = synthetic_typos()
    want = [named_attributes(on.enhance(clean)) for clean, _ in pairs]
    mapped = {
        name: float(np.mean([named_attributes(e.enhance(noisy)) == w for (_, noisy), w in zip(pairs, want)]))
        for name, e in (("repair_on", on), ("repair_off", off))
    }
    benign = [r.text for r in load_prompts() if r.category == "benign" and r.kind != "world"]
    invented = [t for t in benign if named_attributes(on.enhance(t)) - named_attributes(off.enhance(t))]
    return {
        "synthetic_typos": {"captions": len(pairs), "all_attributes_mapped": mapped},
        "benign_not_world": {"prompts": len(benign), "attribute_added_by_typo_repair": len(invented),
                             "examples": invented[:10]},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/enhance.json")
    args = ap.parse_args()
    enhancer = RuleEnhancer()
    enhancer.enhance("a red circle")  # loads the vocabularies once
    cases = paraphrase_cases(10_000)
    ms, right, by_style = [], [], defaultdict(list)
    for c in cases:
        t0 = time.perf_counter()
        e = enhancer.enhance(c.prompt)
        ms.append((time.perf_counter() - t0) * 1000)
        o = e.objects[0] if len(e.objects) == 1 else {}
        ok = (o.get("colour"), o.get("shape"), o.get("motion"), e.background) == (
            c.colour, c.shape, c.motion, c.background,
        )  # fmt: skip
        right.append(ok)
        by_style[c.style].append(ok)
    result = {
        "prompts": len(cases),
        "ms_per_prompt": {"median": float(np.median(ms)), "p95": float(np.percentile(ms, 95)), "max": float(max(ms))},
        "all_four_mapped": float(np.mean(right)),
        "by_style": {s: {"n": len(v), "all_four_mapped": float(np.mean(v))} for s, v in sorted(by_style.items())},
        **typo_checks(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.0f}",
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
