"""Keeps the worker processes running and the job table tidy, from a thread of the server process.

Every `tick_s`: a worker that exited is started again and its running job queued again at
once (no wait for the lease); running jobs with an expired lease are queued again; results
older than the retention limit are deleted and marked expired, and so are the uploads of edit
jobs that ended (done, failed or cancelled) before it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from tessera.serve.db import JobStore
from tessera.serve.settings import ServeConfig

log = logging.getLogger(__name__)


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


class Supervisor:
    def __init__(self, cfg: ServeConfig, store: JobStore, tick_s: float = 1.0):
        self.cfg, self.store, self.tick_s = cfg, store, tick_s
        self.run_id = uuid.uuid4().hex[:8]
        self.procs: dict[int, subprocess.Popen] = {}
        self.owners: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)

    def start(self) -> None:
        # every job "running" now belongs to workers of an earlier server run, all dead: queue them again
        n = self.store.requeue_expired(owners_gone="")
        if n:
            log.info("queued again %d jobs left running by an earlier run", n)
        for part in Path(self.cfg.videos_dir).glob(".*.part.mp4"):  # written by a worker that was killed
            part.unlink(missing_ok=True)
        for part in Path(self.cfg.uploads_dir).glob(".*.part"):
            part.unlink(missing_ok=True)
        held = self.store.upload_names()
        for upload in Path(self.cfg.uploads_dir).glob("*"):  # kept by a request that stopped before its job was stored
            if upload.is_file() and upload.name not in held:
                upload.unlink(missing_ok=True)
        for slot in range(self.cfg.workers):
            self._spawn(slot)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    def alive(self) -> int:
        return sum(p.poll() is None for p in self.procs.values())

    def _spawn(self, slot: int) -> None:
        cfg = self.cfg
        env = dict(os.environ)
        gpus = gpu_count() if cfg.device is None or cfg.device.startswith("cuda") else 0
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
        threads = 0 if gpus else max(1, (os.cpu_count() or 1) // max(1, cfg.workers))
        owner = f"{self.run_id}/w{slot}/{len(self.owners)}-{time.time():.0f}"
        cmd = [sys.executable, "-m", "tessera.serve.worker", "--data", str(cfg.data_dir), "--owner", owner]
        cmd += ["--threads", str(threads), "--lease-s", str(cfg.lease_s), "--poll-s", str(cfg.poll_s)]
        cmd += ["--parent-pid", str(os.getpid()), "--nice", str(cfg.worker_nice)]
        if cfg.checkpoint:
            cmd += ["--checkpoint", str(cfg.checkpoint)]
        if cfg.student:
            cmd += ["--student", str(cfg.student)]
        if cfg.device:
            cmd += ["--device", "cuda" if gpus else cfg.device]
        self.procs[slot] = subprocess.Popen(cmd, env=env)
        self.owners[slot] = owner
        log.info("worker %d started (pid %d)", slot, self.procs[slot].pid)

    def tick(self) -> None:
        for slot, proc in list(self.procs.items()):
            if proc.poll() is not None and not self._stop.is_set():
                log.warning("worker %d (pid %d) exited with %s; starting it again", slot, proc.pid, proc.returncode)
                self.store.requeue_expired(owners_gone=self.owners[slot])
                self._spawn(slot)
        self.store.requeue_expired()
        before = time.time() - self.cfg.retention_s
        for name in self.store.expire_results(before):
            path = Path(self.cfg.videos_dir) / Path(name).name
            path.unlink(missing_ok=True)
        for name in self.store.expire_uploads(before):
            (Path(self.cfg.uploads_dir) / Path(name).name).unlink(missing_ok=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except Exception:  # keep supervising through a transient database error
                log.exception("supervisor tick failed")
