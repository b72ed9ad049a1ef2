"""Start `tessera serve` as a child process and wait until it answers (scripts, benchmarks, tests)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def start(
    data: str | Path,
    port: int,
    workers: int,
    log: str | Path,
    checkpoint: str | Path | None = None,
    extra: list[str] | None = None,
    env: dict | None = None,
    timeout_s: float = 180.0,
) -> subprocess.Popen:
    """`python -m tessera serve` on 127.0.0.1:`port`, stderr appended to `log`; returns once
    /healthz reports `workers` live workers. Raises RuntimeError (naming the log) otherwise."""
    import httpx

    cmd = [sys.executable, "-m", "tessera", "serve", "--data", str(data), "--port", str(port)]
    cmd += ["--workers", str(workers), *(["--checkpoint", str(checkpoint)] if checkpoint else []), *(extra or [])]
    with open(log, "ab") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tessera serve exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()["workers"] == workers:
                return proc
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"tessera serve did not answer within {timeout_s:.0f} s; see {log}")
