"""`tessera serve` on this machine: warm latency against the pipeline's, and a loopback load test.

1. warm: the pipeline's warm time for a 256×256, 2 s job (in this process, after a warm-up),
   then the same job submitted to an idle server and polled until done (target: ≤ 1.5×).
2. load: `--pollers` clients polling job status and `--submitters` clients submitting small
   jobs for `--load-s` seconds while the workers run; every status code counted (target: no
   5xx), status latency percentiles (target p99 < 50 ms), and every accepted job followed to
   its end (target: none lost).

    python benchmarks/serve.py [--checkpoint PATH] [--load-s 60] [--pollers 100] [--submitters 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from tessera.serve.db import TERMINAL, JobStore
from tessera.serve.keys import create_key
from tessera.serve.launch import start

WARM_JOB = {"prompt": "a red circle moving left on a black background", "width": 256, "height": 256, "duration_s": 2.0}
LOAD_JOB = {
    "prompt": "a blue square moving right on a gray background",
    "width": 128,
    "height": 128,
    "duration_s": 1.0,
    "steps": 4,
}


def tiny_checkpoint(folder: Path) -> str:
    """A randomly initialised tiny generation checkpoint (as the tests use): server overhead, not model time."""
    import torch

    from tessera import checkpoint
    from tessera.config import PRESETS, to_dict
    from tessera.models.dit import DiT
    from tessera.models.vae import VideoVAE
    from tessera.training.generator import generator_tensors

    cfg = PRESETS["tiny"]
    torch.manual_seed(0)
    path = folder / "tiny.safetensors"
    checkpoint.save(
        path, generator_tensors(VideoVAE(cfg.vae), DiT(cfg.dit)), to_dict(cfg), kind="generator", name="tiny"
    )
    return str(path)


def pipeline_warm_s(checkpoint: str | None, runs: int) -> float:
    """Median wall time of one warm job through the same function the workers call."""
    from tessera.serve.worker import load_pipeline, run_generation, warm_up

    pipe = load_pipeline(checkpoint, None)
    warm_up(pipe)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs + 1):
            t0 = time.perf_counter()
            run_generation(pipe, {**WARM_JOB, "seed": i}, Path(tmp) / f"{i}.mp4", lambda s, n: None)
            if i:  # the first run after loading settles allocations
                times.append(time.perf_counter() - t0)
    return float(np.median(times))


def start_server(data: Path, checkpoint: str | None, workers: int, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    extra = ["--max-queue", "64", "--rate-per-min", "600"]
    try:
        proc = start(data, port, workers, log, checkpoint=checkpoint, extra=extra, timeout_s=300)
    except RuntimeError as e:
        raise SystemExit(str(e)) from e
    return proc, f"http://127.0.0.1:{port}"


def run_job(url: str, headers: dict, body: dict, follow: str = "events", poll_s: float = 0.02) -> float:
    """Submit, then follow the job to its end; seconds from submission to the done state seen by the client.

    follow="events": read the job's server-sent events (what the page does); "poll": GET its status every `poll_s`.
    """
    t0 = time.perf_counter()
    job = httpx.post(url + "/v1/videos", json=body, headers=headers).json()
    if follow == "events":
        with httpx.stream("GET", f"{url}/v1/jobs/{job['id']}/events", headers=headers, timeout=None) as r:
            for line in r.iter_lines():
                if line.startswith("data:") and json.loads(line[5:])["state"] in TERMINAL:
                    state = json.loads(line[5:])["state"]
                    break
        assert state == "done", state
        return time.perf_counter() - t0
    while True:
        state = httpx.get(f"{url}/v1/jobs/{job['id']}", headers=headers).json()["state"]
        if state in TERMINAL:
            assert state == "done", state
            return time.perf_counter() - t0
        time.sleep(poll_s)


class Connection:
    """One kept-alive HTTP/1.1 connection for GET requests, as a browser tab holds one.

    Small on purpose: the load client shares the server's 2 cores, and a general client's
    per-request work (httpx: connection pool, header models) showed up in the latencies
    it measured while the server sat idle.
    """

    def __init__(self, url: str):
        self.host, self.port = httpx.URL(url).host, httpx.URL(url).port
        self.reader = self.writer = None

    async def get(self, path: str, headers: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{head}\r\n".encode())
        try:
            status_line = await self.reader.readline()
            lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.writer = None  # the server closed it; the next request opens a new one
            raise
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        body = await self.reader.readexactly(int(fields.get("content-length", 0)))
        if fields.get("connection", "").lower() == "close":
            self.writer.close()
            self.writer = None
        return int(status_line.split()[1]), body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(url: str, poll_key: dict, submit_keys: list[dict], args) -> dict:
    """Pollers and submitters for `args.load_s` seconds; status codes, latencies and accepted job ids."""
    codes, latencies_ms, accepted, lags_ms = Counter(), [], [], []
    seed_job = httpx.post(url + "/v1/videos", json=LOAD_JOB, headers=poll_key).json()["id"]
    targets = [(seed_job, poll_key)]
    end = time.perf_counter() + args.load_s
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def poller(i: int) -> None:
            conn = Connection(url)
            while time.perf_counter() < end:
                job_id, headers = targets[i % len(targets)]
                t0 = time.perf_counter()
                try:
                    status, _ = await conn.get(f"/v1/jobs/{job_id}", headers)
                except (asyncio.IncompleteReadError, ConnectionError) as e:
                    codes[type(e).__name__] += 1
                    continue
                latencies_ms.append(1000 * (time.perf_counter() - t0))
                codes[status] += 1
                await asyncio.sleep(args.poll_interval_s)
            conn.close()

        async def submitter(headers: dict) -> None:
            while time.perf_counter() < end:
                try:
                    r = await client.post("/v1/videos", json=LOAD_JOB, headers=headers)
                except httpx.TransportError as e:
                    codes[type(e).__name__] += 1
                    continue
                codes[r.status_code] += 1
                if r.status_code == 202:
                    accepted.append((r.json()["id"], headers))
                    targets.append((r.json()["id"], headers))
                    await asyncio.sleep(args.submit_interval_s)
                else:
                    await asyncio.sleep(float(r.headers.get("Retry-After", args.submit_interval_s)))

        async def lag_probe() -> None:  # how late this client's own event loop runs: part of every latency above
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                await asyncio.sleep(0.01)
                lags_ms.append(1000 * (time.perf_counter() - t0 - 0.01))

        await asyncio.gather(
            *(poller(i) for i in range(args.pollers)), *(submitter(k) for k in submit_keys), lag_probe()
        )
    accepted_ids = [seed_job, *(a[0] for a in accepted)]
    return {"codes": codes, "latencies_ms": latencies_ms, "accepted": accepted_ids, "lags_ms": lags_ms}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None, help="default: the bundled model; 'tiny': a random tiny model")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--load-s", type=float, default=60.0)
    ap.add_argument("--pollers", type=int, default=100)
    ap.add_argument("--submitters", type=int, default=20)
    ap.add_argument("--poll-interval-s", type=float, default=0.5)
    ap.add_argument("--submit-interval-s", type=float, default=3.0)
    ap.add_argument("--skip-warm", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/serve.json")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server below is stopped too
    label = {None: "bundled", "tiny": "tiny (random weights, PRESETS['tiny'])"}.get(args.checkpoint, args.checkpoint)
    if args.checkpoint == "tiny":
        args.checkpoint = tiny_checkpoint(Path(tempfile.mkdtemp()))
    result = {
        "benchmark": "tessera serve: warm latency and loopback load",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_avg_at_start": os.getloadavg()[0],
        "checkpoint": label,
        "workers": args.workers,
    }
    if not args.skip_warm:
        result["pipeline_warm_s"] = round(pipeline_warm_s(args.checkpoint, args.runs), 3)
        print(f"pipeline warm: {result['pipeline_warm_s']:.2f} s for 256x256, 2 s")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TESSERA_HOME"] = tmp
        store = JobStore(Path(tmp) / "data" / "jobs.sqlite3")
        keys = [{"Authorization": f"Bearer {create_key(store, f'k{i}')[1]}"} for i in range(args.submitters + 1)]
        proc, url = start_server(Path(tmp) / "data", args.checkpoint, args.workers, Path(tmp) / "serve.log")
        try:
            result.update(measure(url, store, keys, args))
        finally:
            proc.terminate()
            proc.wait(60)
    if "server_job_s" in result:
        result["ratio_to_pipeline"] = round(result["server_job_s"] / result["pipeline_warm_s"], 3)
        result["target_ratio"] = 1.5
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def measure(url: str, store: JobStore, keys: list[dict], args) -> dict:
    out = {}
    if not args.skip_warm:
        run_job(url, keys[0], {**WARM_JOB, "seed": 99})  # the worker's first job after its warm-up
        server_s = float(np.median([run_job(url, keys[0], {**WARM_JOB, "seed": i}) for i in range(args.runs)]))
        out["server_job_s"] = round(server_s, 3)
        print(f"idle server, same job, followed by its event stream: {server_s:.2f} s")
        polled = [run_job(url, keys[0], {**WARM_JOB, "seed": i}, "poll", 0.25) for i in range(args.runs)]
        out["server_job_s_polling_every_250ms"] = round(float(np.median(polled)), 3)
        print(f"idle server, same job, status polled every 250 ms: {out['server_job_s_polling_every_250ms']:.2f} s")
    got = asyncio.run(load(url, keys[0], keys[1:], args))
    lat = np.array(got["latencies_ms"])
    codes = {str(k): v for k, v in sorted(got["codes"].items(), key=str)}
    deadline = time.time() + (1800 if args.workers else 0)  # without workers (server overhead alone) nothing ends
    while time.time() < deadline and any(store.get_job(i)["state"] not in TERMINAL for i in got["accepted"]):
        time.sleep(1)
    states = Counter(store.get_job(i)["state"] for i in got["accepted"])
    out["load"] = {
        "seconds": args.load_s,
        "pollers": args.pollers,
        "poll_interval_s": args.poll_interval_s,
        "submitters": args.submitters,
        "submit_interval_s": args.submit_interval_s,
        "requests": int(sum(got["codes"].values())),
        "status_codes": codes,
        "server_errors_5xx": int(sum(v for k, v in got["codes"].items() if isinstance(k, int) and k >= 500)),
        "transport_errors": int(sum(v for k, v in got["codes"].items() if isinstance(k, str))),
        "status_latency_ms": {
            p: round(float(np.percentile(lat, q)), 2) for p, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
        },
        "target_p99_ms": 50,
        "client_loop_lag_ms": {
            p: round(float(np.percentile(got["lags_ms"], q)), 2) for p, q in (("p50", 50), ("p99", 99), ("max", 100))
        },
        "accepted_jobs": len(got["accepted"]),
        "accepted_job_states": dict(states),
        "lost_jobs": sum(n for state, n in states.items() if state not in TERMINAL),
    }
    print(json.dumps(out["load"]))
    return out


if __name__ == "__main__":
    main()
