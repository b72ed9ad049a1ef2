"""`tessera serve`: the HTTP API, its worker processes and the web page, with one command."""

from __future__ import annotations

import argparse
import fcntl
import logging
import socket
import sys
from pathlib import Path

from tessera.cli.common import UsageError, check_device, check_folder, check_number

MAX_WORKERS = 64  # worker processes; each holds a model


def check_listen(host: str, port: int) -> None:
    """InputError unless this machine can listen on host:port now (a name that resolves, a port in
    1..65535 that is free and allowed), before any model is loaded."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is outside 1..65535; 8000 is the default")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise UsageError(
            f"--host {host!r} is not an address of this machine ({e}); use 127.0.0.1, or 0.0.0.0 for every network"
        ) from e
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            raise UsageError(
                f"cannot listen on {host}:{port} ({e.strerror}); stop what uses it or pass another --port"
            ) from e


def check_model_file(flag: str, path: str | None) -> None:
    """InputError unless `path` is None or a generation checkpoint (its header is read, not its weights)."""
    from tessera import checkpoint

    if path is None:
        return
    _, _, meta = checkpoint.load(path, skip=("",))  # CheckpointError (exit 2) for a missing or damaged file
    if meta.get("kind") != "generator":
        raise UsageError(f"{flag} {path} is a {meta.get('kind')!r} file, not a generation checkpoint")


def config_from_args(args: argparse.Namespace):
    from tessera.serve.settings import ServeConfig, default_data_dir

    if args.workers is not None and not 0 <= args.workers <= MAX_WORKERS:
        raise UsageError(f"--workers {args.workers} is outside 0..{MAX_WORKERS}; each worker holds a model in memory")
    for flag, v in (("--max-queue", args.max_queue), ("--rate-per-min", args.rate_per_min),
                    ("--quota-per-day", args.quota_per_day)):  # fmt: skip
        if v < 1:
            raise UsageError(f"{flag} {v} must be 1 or more")
    check_number("--retention-h", args.retention_h, 0.0, 24 * 365 * 10, low_open=True, hint="168 is a week")
    check_folder("--data", args.data)
    check_device("--device", args.device)
    check_model_file("--checkpoint", args.checkpoint)
    check_model_file("--student", args.student)
    cfg = ServeConfig(
        data_dir=Path(args.data) if args.data else default_data_dir(),
        checkpoint=args.checkpoint,
        student=args.student,
        device=args.device,
        max_queue=args.max_queue,
        retention_s=args.retention_h * 3600,
        rate_per_min=args.rate_per_min,
        quota_per_day=args.quota_per_day,
        cors_origins=tuple(o for o in args.cors.split(",") if o) if args.cors else (),
        worker_nice=args.worker_nice,
    )
    if not 0 <= args.worker_nice <= 19:
        raise UsageError(f"--worker-nice {args.worker_nice} is outside 0..19")
    if args.workers is not None:
        cfg.workers = args.workers
    else:
        from tessera.serve.supervisor import gpu_count

        cfg.workers = gpu_count() or 1
    return cfg


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from tessera.serve.app import create_app
    except ImportError as e:
        raise UsageError(
            f"tessera serve needs the serve extra ({e.name} is missing): pip install 'tessera[serve]'"
        ) from e

    cfg = config_from_args(args)
    check_listen(args.host, args.port)
    cfg.make_dirs()
    lock = open(Path(cfg.data_dir) / "server.lock", "w")  # noqa: SIM115 (held for the life of the process)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        raise UsageError(f"another tessera serve uses {cfg.data_dir}; stop it or pass another --data folder") from e
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    print(
        f"tessera serve: http://{args.host}:{args.port}/ (data in {cfg.data_dir}, {cfg.workers} workers)",
        file=sys.stderr,
    )
    import torch

    torch.set_num_threads(1)  # this process only checks requests (a small text model); the workers generate
    sys.setswitchinterval(0.001)  # the event loop waits at most 1 ms (not 5) for the lock a request check holds
    uvicorn.run(create_app(cfg), host=args.host, port=args.port, log_level="warning")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("serve", help="HTTP API + workers + web page (http://127.0.0.1:8000/)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--data", default=None, help="folder for jobs, videos and uploads (default: $TESSERA_HOME/serve)")
    s.add_argument("--checkpoint", default=None, help="generation checkpoint; default: the bundled model")
    s.add_argument(
        "--student", default=None,
        help="few-step student checkpoint for fast jobs (default: the bundled one, when serving the bundled model)",
    )  # fmt: skip
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: one per GPU, else 1)")
    s.add_argument("--device", default=None, help="cpu or cuda (default: a GPU if there is one)")
    s.add_argument("--max-queue", type=int, default=64, help="queued jobs before POST answers 429")
    s.add_argument("--retention-h", type=float, default=168.0, help="hours a result stays downloadable")
    s.add_argument("--rate-per-min", type=int, default=60, help="default POST requests per key per minute")
    s.add_argument("--quota-per-day", type=int, default=500, help="default jobs per key per 24 h")
    s.add_argument(
        "--worker-nice", type=int, default=10,
        help="how much lower the workers' CPU priority is than the HTTP process's (0-19; default 10)",
    )  # fmt: skip
    s.add_argument("--cors", default="", help="comma-separated origins allowed by CORS (default: none, CORS off)")
    s.set_defaults(func=cmd_serve)
