"""Cold start of the default text encoder: a fresh interpreter that imports it and loads the MiniLM.

Times, in a new process each run (the median of --runs), what `tessera generate` pays before any
compute for its text encoder:

- native: `from tessera.models.text import TextEncoder; TextEncoder()` (tessera.models.bert, no
  transformers import);
- transformers: AutoTokenizer + AutoModel on the same folder, the path TextEncoder took before;
- torch: `import torch` alone, the floor both share.

Also records the machine's load average, since the figures move with it. Writes JSON.

    python benchmarks/text_encoder.py [--runs 3] [--out benchmarks/results/text_encoder.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

SNIPPETS = {
    "torch": "import torch",
    "native": "from tessera.models.text import TextEncoder; TextEncoder()",
    "transformers": (
        "import transformers; from tessera.models.text import default_model_path; p = default_model_path(); "
        "transformers.AutoTokenizer.from_pretrained(p); transformers.AutoModel.from_pretrained(p).eval()"
    ),
}


def cold_seconds(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/text_encoder.json")
    args = ap.parse_args()
    result = {
        "benchmark": "cold import + load of the default text encoder (MiniLM-L6), fresh process per run",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before": os.getloadavg(),
        "runs": args.runs,
        "median_s": {},
    }
    for label, code in SNIPPETS.items():
        times = [cold_seconds(code) for _ in range(args.runs)]
        result["median_s"][label] = round(statistics.median(times), 3)
        print(f"{label}: median {result['median_s'][label]} s over {args.runs} runs", flush=True)
    result["load_average_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median_s"]))


if __name__ == "__main__":
    main()
