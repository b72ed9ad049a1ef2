"""Worker processes: each loads the pipeline once, keeps it warm, and runs queued jobs one at a time.

The pipeline is reached through five functions only, so a change of its API touches one place:
`load_pipeline`, `check_request` and `check_edit` (validation and prompt filter, no compute; the
HTTP process calls them before accepting a job), `run_generation` and `run_edit` (one job -> one
marked, recorded MP4).

Run by `tessera serve`; by hand: `python -m tessera.serve.worker --data DIR --owner NAME`.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from tessera.errors import InputError, out_of_memory
from tessera.serve.db import JobStore

log = logging.getLogger(__name__)

MAX_STEPS = 200  # a server accepts fewer steps than the library (1000): one job must not hold a worker for hours
EDIT_TASKS = {  # the API's task names -> tessera.edit's
    "extend": "extend",
    "interpolate": "interpolate",
    "image_to_video": "animate",
    "restyle": "restyle",
    "inpaint": "inpaint",
}
EDIT_FIELDS = {  # the fields only some tasks take, and which
    "strength": ("restyle",),
    "box": ("inpaint",),
    "start_s": ("inpaint",),
    "end_s": ("inpaint",),
    "duration_s": ("extend", "interpolate", "image_to_video"),
    "context_s": ("extend",),
    "backwards": ("extend",),
}
_REGION_FIELDS = ("box", "start_s", "end_s")  # inpaint's: resolved to output pixels and seconds by check_edit


class JobCancelled(Exception):
    """The job's owner cancelled it (or the lease was lost) while it ran."""


def load_pipeline(checkpoint: str | None, device: str | None):
    """The pipeline with the prompt filter, where this Tessera has one (tessera.safety.prompt_filter)."""
    from tessera.pipeline import TesseraPipeline

    components = {}
    try:
        from tessera.safety.prompt_filter import PromptFilter

        components["prompt_filter"] = PromptFilter.default()
    except ImportError:
        log.warning("no prompt filter in this installation (tessera.safety.prompt_filter); prompts are not screened")
    return TesseraPipeline.from_single_file(checkpoint, device=device, **components)


def load_student(path: str | None, device: str | None):
    """The few-step student's pipeline (`path`, else the bundled student when one ships), or None."""
    from tessera.pipeline import bundled_student

    path = path or (str(bundled_student()) if bundled_student().is_file() else None)
    return load_pipeline(path, device) if path else None


def _call_kwargs(params: dict) -> dict:
    """API fields -> the pipeline's keyword arguments. A fast job samples as its student says (steps, guidance)."""
    fast = bool(params.get("fast"))
    return dict(
        negative_prompt=None if fast else params.get("negative_prompt"),
        num_inference_steps=None if fast else params.get("steps"),  # None: the model's own (DEFAULT_SAMPLING)
        guidance_scale=None if fast else params.get("guidance"),
        width=params.get("width"),
        height=params.get("height"),
        duration_s=params.get("duration_s"),
        fps=params.get("fps"),
        seed=params.get("seed", 0),
        enhance=params.get("enhance", True),
    )


def check_request(pipe, params: dict) -> dict:
    """Validate one generation request without compute; returns the resolved size (frames, height, width, fps).

    Raises InputError for a bad value, UnsafePromptError (with its category) for a refused prompt.
    """
    from tessera.schedulers import SCHEDULERS

    steps = params.get("steps")
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise InputError(f"steps {steps} is outside 1–{MAX_STEPS} on this server; leave it out for the model's default")
    scheduler = params.get("scheduler")
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise InputError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(sorted(SCHEDULERS))}")
    req = pipe.check_request(params.get("prompt", ""), **_call_kwargs(params))
    enhanced = req.enhanced[0]
    return {
        "frames": req.frames, "height": req.height_px, "width": req.width_px, "fps": req.fps,
        "enhanced_prompt": req.encoded_prompts[0] if enhanced is not None else None,
        "unmapped_words": list(enhanced.unknown) if enhanced is not None else [],
    }  # fmt: skip


def run_generation(pipe, params: dict, out_path: Path, on_progress) -> dict:
    """One job: generate, watermark, write the MP4 at `out_path`, record the generation (all in the pipeline).

    `on_progress(step, total)` is called after every denoising step; it may raise JobCancelled.
    Returns {"generation_id", "path"}.
    """
    out = pipe(
        params["prompt"],
        scheduler=None if params.get("fast") else params.get("scheduler") or None,
        output_type="mp4",
        output_path=out_path,
        callback=on_progress,
        **_call_kwargs(params),
    )
    return {"generation_id": out.generation_id, "path": str(out.path)}


def check_edit(pipe, params: dict, files: list[Path]) -> dict:
    """Validate one edit of uploaded `files` without compute (tessera.edit decides what is valid): returns the
    resolved output (width, height, frames, fps; for inpaint the box in output pixels and the time range).

    The API's own rule on top: image_to_video takes an image, extend a video (an image is image_to_video).
    Raises InputError for a bad value, UnsafePromptError (with its category) for a refused prompt.
    """
    from tessera import edit

    task = params["task"]
    shapes = [edit.probe_media(f, pipe.config.fps) for f in files]  # (frames at the model's fps, height, width)
    frames, h0, w0 = shapes[0]
    if task == "image_to_video" and frames != 1:
        raise InputError(f"image_to_video needs an image (1 frame); the upload has {frames} frames: send a PNG or JPEG")
    if task == "extend" and frames == 1:
        raise InputError("extend continues a video; the upload is an image (1 frame): use task=image_to_video")
    w, h = edit.output_size(pipe, w0, h0, params.get("width"), params.get("height"))
    out = {}
    if task == "inpaint":
        box = edit.box_to_output(params.get("box") or "", w0, h0, w, h)
        out = {"box": list(box), "from_s": params.get("start_s") or 0.0, "to_s": params.get("end_s")}  # None: the end
    w, h, duration_s = edit.check_task(pipe, EDIT_TASKS[task], shapes, **_edit_kwargs(params), **out, width=w, height=h)
    resolved = check_request(pipe, {**params, "width": w, "height": h, "duration_s": duration_s, "fps": None})
    if task == "extend":  # the input, then the new frames
        resolved["frames"] += frames - 1
    return {**resolved, **out}


def _edit_kwargs(params: dict) -> dict:
    """The task's own arguments of an edit job, in tessera.edit's names; those not sent take the task's defaults."""
    task = params["task"]
    return {
        name: params[name]
        for name, tasks in EDIT_FIELDS.items()
        if task in tasks and name not in _REGION_FIELDS and params.get(name) is not None
    }


def run_edit(pipe, params: dict, files: list[Path], out_path: Path, on_progress) -> dict:
    """One edit job: the pipeline's method for the task on the uploaded files, marked, written and recorded
    as `run_generation` does. Returns {"generation_id", "path"}."""
    r, task = params["resolved"], params["task"]
    kwargs = _edit_kwargs(params)
    settings = dict(
        _call_kwargs({**params, "width": r["width"], "height": r["height"]}),
        scheduler=params.get("scheduler") or None, output_type="mp4", output_path=out_path, callback=on_progress,
    )  # fmt: skip
    for unused in ("duration_s", "fps"):  # the task decides these
        settings.pop(unused)
    prompt = params["prompt"]
    if task == "interpolate":
        out = pipe.interpolate(files[0], files[1], prompt, **kwargs, **settings)
    elif task == "inpaint":
        out = pipe.inpaint(files[0], prompt, box=tuple(r["box"]), from_s=r["from_s"], to_s=r["to_s"], **settings)
    else:
        method = {"extend": pipe.extend, "image_to_video": pipe.animate, "restyle": pipe.restyle}[task]
        out = method(files[0], prompt, **kwargs, **settings)
    return {"generation_id": out.generation_id, "path": str(out.path)}


# -- the worker loop ---------------------------------------------------------------------------------


class Worker:
    """Claims jobs from the store, runs them, reports progress and renews its lease."""

    def __init__(
        self, store: JobStore, pipe, videos_dir: Path, owner: str, lease_s: float = 20.0, student=None,
        uploads_dir: Path | None = None,
    ):  # fmt: skip
        """uploads_dir: where edit jobs' inputs are (default: `uploads` beside `videos_dir`, as ServeConfig lays out)."""
        self.store, self.pipe, self.videos_dir = store, pipe, Path(videos_dir)
        self.owner, self.lease_s, self.student = owner, lease_s, student
        self.uploads_dir = Path(uploads_dir) if uploads_dir is not None else self.videos_dir.parent / "uploads"

    def run_one(self) -> dict | None:
        """Claim and run the oldest queued job; returns it (with its end state) or None when idle."""
        job = self.store.claim(self.owner, self.lease_s)
        if job is None:
            return None
        params = json.loads(job["params"])
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job["id"], stop), daemon=True)
        beat.start()
        try:
            return self._run(job, params)
        finally:
            stop.set()
            beat.join()

    def _run(self, job: dict, params: dict) -> dict:
        job_id = job["id"]

        def on_progress(step: int, total: int) -> None:
            if not self.store.report(job_id, self.owner, step, total, self.lease_s):
                raise JobCancelled(job_id)

        out = self.videos_dir / f"{job_id}.mp4"
        try:
            if params.get("fast") and self.student is None:
                raise InputError("this worker has no few-step student; send fast=false")
            pipe = self.student if params.get("fast") else self.pipe
            if job["kind"] == "edit":  # the uploads stay until the job's record expires, so a re-run finds them
                files = [self.uploads_dir / Path(name).name for name in json.loads(job["uploads"] or "[]")]
                result = run_edit(pipe, params, files, out, on_progress)
            else:
                result = run_generation(pipe, params, out, on_progress)
        except JobCancelled:
            self.store.end(job_id, self.owner, "cancelled")
            return {**job, "state": "cancelled"}
        except Exception as e:  # a failed job must not take the worker down
            log.exception("job %s failed", job_id)
            why = f"{type(e).__name__}: {e}"
            if out_of_memory(e):  # the request is too large for this worker, not a bug
                why = "out of memory on the worker: send a smaller width / height, a shorter duration_s, or fast=true"
            self.store.end(job_id, self.owner, "failed", why)
            return {**job, "state": "failed"}
        if not self.store.finish(job_id, self.owner, Path(result["path"]).name, result["generation_id"]):
            log.warning("job %s was taken back while it ran; its result is dropped", job_id)
        return {**job, "state": "done", **result}

    def _heartbeat(self, job_id: str, stop: threading.Event) -> None:
        """Renew the lease while the job runs (also through text encoding and decoding, between steps)."""
        while not stop.wait(self.lease_s / 4):
            job = self.store.get_job(job_id)
            if job is None or job["state"] != "running" or job["lease_owner"] != self.owner:
                return
            self.store.report(job_id, self.owner, job["step"], job["total"], self.lease_s)

    def serve_forever(self, poll_s: float = 0.2, parent_pid: int | None = None) -> None:
        while parent_pid is None or os.getppid() == parent_pid:
            if self.run_one() is None:
                time.sleep(poll_s)


def warm_up(pipe) -> None:
    """One smallest generation, marked and signed like any other but not stored in the ledger
    (nobody receives it), so the first job runs as fast as the next ones."""
    import copy

    side = pipe.geometry.nearest_side(pipe.geometry.min_side_px)
    ledger = pipe.ledger
    pipe.ledger = copy.copy(ledger)
    pipe.ledger.append = lambda record: 0  # the one step left out
    try:
        pipe("warm up", num_inference_steps=1, width=side, height=side, duration_s=0.5)
    finally:
        pipe.ledger = ledger


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent (the server) dies, even by kill -9."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tessera.serve.worker")
    p.add_argument("--data", required=True)
    p.add_argument("--owner", required=True)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--student", default=None, help="few-step student for fast jobs (default: the bundled one)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--lease-s", type=float, default=20.0)
    p.add_argument("--poll-s", type=float, default=0.2)
    p.add_argument("--parent-pid", type=int, default=None)
    p.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by this much (0-19)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker {args.owner} %(levelname)s %(message)s")
    if args.nice:
        os.nice(max(0, min(19, args.nice)))
    if args.parent_pid:
        _die_with_parent()
        if os.getppid() != args.parent_pid:
            return 0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    pipe = load_pipeline(args.checkpoint, args.device)
    warm_up(pipe)
    student = load_student(args.student, args.device) if args.checkpoint is None or args.student else None
    if student is not None:
        warm_up(student)
    log.info("ready%s", " (with the few-step student)" if student is not None else "")
    worker = Worker(
        JobStore(data / "jobs.sqlite3"), pipe, data / "videos", args.owner, args.lease_s, student, data / "uploads"
    )
    worker.serve_forever(args.poll_s, args.parent_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
