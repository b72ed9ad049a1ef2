"""The prepare stages as Ray tasks: `tessera prepare SRC --out DATASET --ray [ADDRESS|auto|local]`.

`RayRunner` replaces only the executor of `prepare.Runner`: the driver (the process that
runs `prepare`) still lists the items, skips those in the journals, appends each result to
the journal as it arrives and writes the manifest and shards, so a Ray run writes the same
files as a local one and resumes from the same journals.

- A worker process killed during a task (the node's OOM killer, a preempted node, `kill`)
  costs that task only: Ray runs it again (`max_retries`). An item that kills every worker
  it runs on (a decoder crash) is rejected as `crashed`, as in the local run.
- A killed driver loses at most the tasks in flight: its job's tasks end with it, and the
  same command started again resumes from the journals.
- Encode tasks ask for `gpus_per_encode` GPUs and run the VAE on CUDA when the cluster has
  GPUs; otherwise they run on a CPU like every other stage.

Every machine of the cluster needs Tessera installed (`pip install 'tessera[ray]'`) and the
sources readable: a shared folder, or URLs (`remote.py`) each node can fetch.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

from tessera.data.ingest.prepare import CRASHED, Runner, _guard, _init_worker
from tessera.errors import InputError

log = logging.getLogger(__name__)
_READY = False  # this worker process has set its thread counts


def _call(fn: Callable[..., dict], *args) -> dict:
    """A stage function in a Ray worker, with one thread per task as in the local pool."""
    global _READY
    if not _READY:
        _init_worker()
        _READY = True
    return _guard(fn, *args)


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray, which is not installed; pip install 'tessera[ray]'") from None
    return ray


class RayRunner(Runner):
    """Runs the stage functions as Ray tasks on the cluster at `address`.

    `address`: "auto" (the cluster `ray start` made on this machine, or $RAY_ADDRESS), a
    cluster address (`10.0.0.1:6379`, `ray://head:10001`), or "local" (a Ray instance of
    `workers` CPUs started for this run). `workers` caps the tasks in flight (default: the
    cluster's CPUs). When Ray is already initialised in this process, its cluster is used.
    """

    def __init__(
        self,
        address: str = "auto",
        workers: int | None = None,
        progress: bool = True,
        gpus_per_encode: float = 1.0,
        max_retries: int = 2,
    ):
        import_ray()  # before any work: a missing Ray is a usage error
        super().__init__(workers or 0, progress)
        self.address, self.gpus_per_encode, self.max_retries = address, gpus_per_encode, max_retries
        self._owns_ray = False
        self._task = None

    def __enter__(self) -> RayRunner:
        ray = import_ray()
        if not ray.is_initialized():
            self._connect(ray)
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 1)), resources.get("GPU", 0)
        self.workers = self.workers or cpus
        if gpus > 0 and self.gpus_per_encode > 0:
            self.encode_device = "cuda"
        log.info("Ray cluster: %d CPUs, %g GPUs; %d tasks in flight, encode on %s", cpus, gpus, self.workers,
                 self.encode_device)  # fmt: skip
        self._task = ray.remote(_call)
        return self

    def _connect(self, ray) -> None:
        opts = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if self.address == "local":
                ray.init(address="local", num_cpus=self.workers or None, **opts)
            else:
                ray.init(address=self.address, **opts)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise InputError(
                f"--ray {self.address}: cannot connect to a Ray cluster ({' '.join(str(e).split())[:200]}); "
                "start one with `ray start --head`, pass its address, or use --ray local"
            ) from e
        self._owns_ray = True

    def __exit__(self, *exc) -> None:
        if self._owns_ray:
            import ray

            ray.shutdown()

    def _execute(
        self, desc: str, todo: list[tuple[str, Callable, tuple]], finish: Callable[[str, dict], None], gpu: bool
    ) -> None:
        """Keep up to 2 × `workers` tasks in flight; journal each result as it arrives."""
        import ray

        opts = {"num_cpus": 1, "max_retries": self.max_retries, "name": f"tessera-{desc}"}
        if gpu and self.encode_device == "cuda":
            opts["num_gpus"] = self.gpus_per_encode
        task = self._task.options(**opts)
        items, pending = iter(todo), {}
        while True:
            for key, fn, args in itertools.islice(items, 2 * self.workers - len(pending)):
                pending[task.remote(fn, *args)] = key
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                key = pending.pop(ref)
                finish(key, self._result(ray, ref, key))

    @staticmethod
    def _result(ray, ref, key: str) -> dict:
        """The task's result; `crashed` when it killed every worker it ran on; stops the run when a worker cannot
        load the task (Tessera missing on a machine: every task would fail the same way)."""
        try:
            return ray.get(ref)
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError):
            return dict(CRASHED)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, (ImportError, ray.exceptions.RaySystemError)):  # e.g. the task does not unpickle
                raise InputError(
                    f"a Ray worker cannot run the {key!r} task ({' '.join(str(e.cause).split())[:200]}); "
                    "install Tessera with the same version on every machine of the cluster"
                ) from e
            return {"reason": "error", "detail": f"{type(e.cause).__name__}: {' '.join(str(e.cause).split())[:200]}"}
