"""Wall time of `tessera generate` with the defaults (bundled model), as a user runs it.

Runs the CLI in a fresh process (so model loading counts), checks the MP4 it writes
decodes to the requested frame count and size, and writes JSON.

    python benchmarks/generate.py [--runs 3] [--out benchmarks/results/generate.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tessera.export import probe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prompt", default="a red circle moving left on a black background")
    ap.add_argument("--out", default="benchmarks/results/generate.json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TESSERA_HOME=tmp)
        for i in range(args.runs):
            path = Path(tmp) / f"v{i}.mp4"
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "tessera", "generate", args.prompt, "-o", str(path), "--seed", str(i)],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            seconds = time.perf_counter() - t0
            info = probe(path)
            rows.append(
                {
                    "seconds": round(seconds, 2),
                    **{k: info[k] for k in ("width", "height", "frames", "fps", "codec", "pix_fmt")},
                }
            )
            print(
                f"run {i}: {seconds:.1f} s, {info['width']}x{info['height']}, {info['frames']} frames, {info['codec']}/{info['pix_fmt']}"
            )
    secs = sorted(r["seconds"] for r in rows)
    result = {
        "benchmark": "tessera generate, defaults, bundled model",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "median_s": secs[len(secs) // 2],
        "max_s": secs[-1],
        "target_s": 60,
        "runs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("median_s", "max_s", "target_s")}))


if __name__ == "__main__":
    main()
