"""Speed and accuracy of the default prompt enhancer on the paraphrase set (no model, no generation).

Times `RuleEnhancer.enhance` on every prompt of tessera/eval_sets/paraphrase.jsonl (after one
warm-up call that loads the vocabularies), and counts prompts whose rewrite names exactly the
intended colour, shape, motion and background, per wording style. Writes JSON.

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

from tessera.enhance import RuleEnhancer
from tessera.eval import paraphrase_cases


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
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.0f}",
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
