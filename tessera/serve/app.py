"""The HTTP API and the web page of `tessera serve` (FastAPI; schema at /openapi.json, docs at /docs).

The HTTP process never generates: it validates a request (`worker.check_request`, or for an edit
`worker.check_edit` on the stored upload; no compute), stores the job in SQLite and answers at
once; worker processes do the work. Every /v1 route needs an API key (`Authorization: Bearer
tsk_...` or `X-API-Key`), and a key sees only its own jobs and files (someone else's job
answers 404, as an unknown one does).
"""

import asyncio
import gc
import json
import logging
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, Response, Security, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from tessera.config import MAX_VIDEO_S
from tessera.errors import InputError, UnsafePromptError
from tessera.serve import keys, worker
from tessera.serve.db import TERMINAL, JobStore, QueueFull
from tessera.serve.limits import BodyLimit, RateLimiter, RequestCounter
from tessera.serve.settings import ServeConfig
from tessera.serve.uploads import UploadRejected, read_frames, save_checked

log = logging.getLogger(__name__)

JOB_ID = r"^[0-9a-f]{32}$"
EDIT_TASKS = tuple(worker.EDIT_TASKS)  # extend, interpolate, image_to_video, restyle, inpaint
BEARER = HTTPBearer(auto_error=False, description="Authorization: Bearer tsk_... (tessera keys add NAME)")
X_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same key in its own header")
VERIFY_FRAMES = 64  # verification reads at most this many frames of an upload


class VideoRequest(BaseModel):
    """POST /v1/videos. Sizes in pixels (multiples of 32), duration in seconds; unset: the model's default."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    prompt: str = Field(min_length=1, max_length=2000, examples=["a red circle moving left on a black background"])
    negative_prompt: str | None = Field(None, max_length=2000)
    width: int | None = Field(None, ge=1, le=8192)
    height: int | None = Field(None, ge=1, le=8192)
    duration_s: float | None = Field(
        None, gt=0, le=MAX_VIDEO_S, description="seconds; above the model's 4 s made in chunks"
    )
    fps: int | None = Field(None, ge=1, le=120)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    steps: int | None = Field(None, ge=1, le=200, description="denoising steps; default: the model's (25)")
    guidance: float | None = Field(None, ge=0, le=50, description="default: the model's (4; 1 = no guidance)")
    scheduler: str | None = Field(None, max_length=32, description="solver; default: the model's (euler)")
    fast: bool = Field(
        False,
        description="use the few-step student when the server has one (501 when not); it samples with its own "
        "steps and guidance, so steps, guidance, scheduler and negative_prompt are not used",
    )
    enhance: bool = Field(True, description="rewrite the prompt into the model's caption style first")


class Progress(BaseModel):
    step: int
    total: int
    fraction: float


class Job(BaseModel):
    id: str
    kind: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: Progress
    eta_s: float | None
    queue_position: int | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    params: dict
    enhanced_prompt: str | None = Field(None, description="the prompt as the model reads it (the enhancer's rewrite)")
    unmapped_words: list[str] = Field([], description="words the enhancer kept as typed (it knows no value for them)")
    video_url: str | None
    generation_id: str | None
    expired: bool


class JobList(BaseModel):
    jobs: list[Job]


class Problem(BaseModel):
    detail: str
    category: str | None = None


def job_view(store: JobStore, row: dict) -> Job:
    step, total = row["step"], row["total"]
    eta = None
    if row["state"] == "running" and step > 0 and row["started"]:
        eta = round((time.time() - row["started"]) / step * (total - step), 2)
    done = row["state"] == "done" and not row["expired"]
    params = json.loads(row["params"])
    resolved = params.get("resolved") or {}
    return Job(
        enhanced_prompt=resolved.get("enhanced_prompt"),
        unmapped_words=resolved.get("unmapped_words", []),
        id=row["id"],
        kind=row["kind"],
        state=row["state"],
        progress=Progress(step=step, total=total, fraction=round(step / total, 4) if total else 0.0),
        eta_s=eta,
        queue_position=store.queue_position(row) if row["state"] == "queued" else None,
        error=row["error"],
        created_at=row["created"],
        started_at=row["started"],
        finished_at=row["finished"],
        params=params,
        video_url=f"/v1/jobs/{row['id']}/video" if done else None,
        generation_id=row["generation_id"],
        expired=bool(row["expired"]),
    )


class Validator:
    """The pipeline the HTTP process holds for `check_request` only (loaded once, never run).

    One check at a time: a check is CPU work in Python (the prompt filter's text model), and
    several at once in the request threads would hold the interpreter lock in turns against
    the event loop that answers every status request.
    """

    def __init__(self, cfg: ServeConfig, pipe=None):
        self.cfg, self._pipe = cfg, pipe
        self._lock = threading.Lock()

    def check(self, params: dict) -> dict:
        """`worker.check_request` of a text-to-video job."""
        return self._run(worker.check_request, params)

    def check_edit(self, params: dict, files: list[Path]) -> dict:
        """`worker.check_edit` of an edit job on its checked uploads."""
        return self._run(worker.check_edit, params, files)

    def _run(self, check, *args) -> dict:
        with self._lock:
            if self._pipe is None:
                self._pipe = worker.load_pipeline(self.cfg.checkpoint, "cpu")
            return check(self._pipe, *args)

    def has_student(self) -> bool:
        """Whether the workers load a few-step student: the configured one, or the bundled one with the bundled model."""
        from tessera.pipeline import bundled_student

        if self.cfg.student:
            return True
        return self.cfg.checkpoint is None and bundled_student().is_file()


# -- the app -------------------------------------------------------------------------------------------


def create_app(cfg: ServeConfig, supervise: bool = True, pipe=None) -> FastAPI:
    """The API, page and (with `supervise`) the worker processes, for one data folder.

    `pipe`: the pipeline to validate requests with (default: loaded from `cfg.checkpoint` at start-up).
    """
    cfg.make_dirs()
    store = JobStore(cfg.db_path)
    validator, limiter, http_counts = Validator(cfg, pipe), RateLimiter(), Counter()
    supervisor = None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal supervisor
        await asyncio.to_thread(validator.check, {"prompt": "warm up"})  # load once, before the first request
        gc.collect()
        gc.freeze()  # the loaded models' objects: never traced again, so no collection pauses a request for long
        if supervise:
            from tessera.serve.supervisor import Supervisor

            supervisor = Supervisor(cfg, store)
            supervisor.start()
        yield
        if supervisor is not None:
            supervisor.stop()

    app = FastAPI(
        title="Tessera",
        version="1",
        summary="Text-to-video and edit jobs: submit, follow, download, verify.",
        lifespan=lifespan,
        responses={401: {"model": Problem}, 429: {"model": Problem}},
    )
    app.state.cfg, app.state.store = cfg, store
    app.state.workers_alive = lambda: supervisor.alive() if supervisor else 0
    if cfg.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(BodyLimit, body_bytes=cfg.max_request_bytes, upload_bytes=cfg.max_upload_bytes)
    app.add_middleware(RequestCounter, counts=http_counts)
    _error_handlers(app)

    async def api_key(  # async: a key lookup is one indexed read, cheaper than a hop to the thread pool
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
        x_api_key: Annotated[str | None, Security(X_API_KEY)],
    ) -> dict:
        secret = x_api_key or (bearer.credentials if bearer else "")
        key = keys.lookup(store, secret) if secret else None
        if key is None:
            raise HTTPException(
                401,
                "a valid API key is needed: send 'Authorization: Bearer tsk_...' (create one with `tessera keys add NAME`)",
                {"WWW-Authenticate": "Bearer"},
            )
        return key

    async def submit_key(key: Annotated[dict, Depends(api_key)]) -> dict:
        wait = limiter.hit(key["id"], key["rate_per_min"] or cfg.rate_per_min)
        if wait:
            raise HTTPException(
                429, "too many requests for this key; wait and retry", {"Retry-After": str(int(wait) + 1)}
            )
        quota = key["quota_per_day"] or cfg.quota_per_day
        if store.jobs_since(key["id"], time.time() - 86400) >= quota:
            raise HTTPException(429, f"this key's quota of {quota} jobs per 24 h is used up", {"Retry-After": "3600"})
        return key

    Key = Annotated[dict, Depends(api_key)]
    SubmitKey = Annotated[dict, Depends(submit_key)]
    _job_routes(app, store, validator, Key, SubmitKey)
    _upload_routes(app, cfg, validator, SubmitKey)
    _service_routes(app, store, http_counts)
    return app


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UploadRejected)
    async def rejected(request: Request, e: UploadRejected):
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.exception_handler(InputError)
    async def bad_input(request: Request, e: InputError):
        return JSONResponse({"detail": str(e)}, status_code=422)

    @app.exception_handler(UnsafePromptError)
    async def unsafe(request: Request, e: UnsafePromptError):
        return JSONResponse({"detail": str(e), "category": e.category}, status_code=400)


def _job_routes(app: FastAPI, store: JobStore, validator: Validator, Key, SubmitKey) -> None:
    cfg: ServeConfig = app.state.cfg

    @app.post(
        "/v1/videos",
        status_code=202,
        response_model=Job,
        responses={400: {"model": Problem}, 422: {"model": Problem}, 501: {"model": Problem}},
    )
    def create_video(body: VideoRequest, key: SubmitKey) -> Job:
        """Queue a text-to-video job. 400: refused by the prompt filter (with its category); 422: bad value."""
        params = body.model_dump()
        if body.fast and not validator.has_student():
            raise HTTPException(501, "this server has no few-step student; send fast=false")
        params["resolved"] = validator.check(params)
        try:
            row = store.create_job(key["id"], "video", params, cfg.max_queue)
        except QueueFull as e:
            raise HTTPException(429, f"the queue is full ({e}); retry later", {"Retry-After": "10"}) from e
        return job_view(store, row)

    @app.get("/v1/jobs", response_model=JobList)
    async def list_jobs(key: Key, limit: int = 50) -> JobList:
        """This key's jobs, newest first (the page's gallery)."""
        return JobList(jobs=[job_view(store, r) for r in store.list_jobs(key["id"], max(1, min(limit, 200)))])

    def owned(job_id: str, key: dict) -> dict:
        row = store.get_job(job_id, key["id"])
        if row is None:
            raise HTTPException(404, f"no job {job_id} for this key")
        return row

    @app.get("/v1/jobs/{job_id}", response_model=Job, responses={404: {"model": Problem}})
    async def get_job(job_id: str, key: Key) -> Job:
        """State, progress (step i of n), ETA and error of one job."""
        return job_view(store, owned(job_id, key))

    @app.delete("/v1/jobs/{job_id}", response_model=Job, responses={404: {"model": Problem}})
    def cancel_job(job_id: str, key: Key) -> Job:
        """Cancel: a queued job at once, a running one at its next denoising step."""
        owned(job_id, key)
        return job_view(store, store.cancel(job_id, key["id"]))

    @app.get(
        "/v1/jobs/{job_id}/events", responses={200: {"content": {"text/event-stream": {}}}, 404: {"model": Problem}}
    )
    async def job_events(job_id: str, key: Key) -> StreamingResponse:
        """Server-sent events: one `job` event (the Job as JSON) per change, until the job ends."""
        owned(job_id, key)
        return StreamingResponse(
            _event_stream(store, job_id), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.get(
        "/v1/jobs/{job_id}/video",
        responses={200: {"content": {"video/mp4": {}}}, 404: {"model": Problem}, 410: {"model": Problem}},
    )
    async def job_video(job_id: str, key: Key) -> FileResponse:
        """The MP4 (H.264), with range requests."""
        row = owned(job_id, key)
        if row["expired"]:
            raise HTTPException(410, "this result passed the retention limit and was deleted; submit the job again")
        if row["state"] != "done" or not row["video"]:
            raise HTTPException(404, f"job {job_id} has no video yet (state {row['state']})")
        path = (cfg.videos_dir / Path(row["video"]).name).resolve()
        if path.parent != cfg.videos_dir.resolve() or not path.is_file():
            raise HTTPException(404, f"the video of job {job_id} is missing")
        return FileResponse(path, media_type="video/mp4", filename=f"tessera-{job_id}.mp4")


async def _event_stream(store: JobStore, job_id: str, poll_s: float = 0.1):
    last = None
    while True:
        row = store.get_job(job_id)
        view = job_view(store, row).model_dump_json()
        if view != last:
            yield f"event: job\ndata: {view}\n\n"
            last = view
        if row["state"] in TERMINAL:
            return
        await asyncio.sleep(poll_s)


def _upload_routes(app: FastAPI, cfg: ServeConfig, validator: Validator, SubmitKey) -> None:
    store: JobStore = app.state.store

    def checked(file: UploadFile):
        return save_checked(
            file.file,
            file.content_type,
            cfg.uploads_dir,
            cfg.max_upload_bytes,
            cfg.max_upload_side_px,
            cfg.max_upload_frames,
        )

    @app.post(
        "/v1/edits",
        status_code=202,
        response_model=Job,
        responses={400: {"model": Problem}, 413: {"model": Problem}, 415: {"model": Problem}, 422: {"model": Problem}},
    )
    def create_edit(
        key: SubmitKey,
        file: Annotated[UploadFile, File(description="the video (MP4, WebM) or image (PNG, JPEG) to edit")],
        task: Annotated[Literal[EDIT_TASKS], Form()],
        prompt: Annotated[str, Form(min_length=1, max_length=2000, description="what the result shows")],
        file_b: Annotated[
            UploadFile | None, File(description="interpolate only: the video or image the clip ends at")
        ] = None,
        negative_prompt: Annotated[str | None, Form(max_length=2000)] = None,
        strength: Annotated[
            float | None, Form(ge=0, le=1, allow_inf_nan=False, description="restyle only: how much to change (0.6)")
        ] = None,
        box: Annotated[
            str | None, Form(max_length=64, description="inpaint only: x0,y0,x1,y1 in pixels of the upload")
        ] = None,
        start_s: Annotated[
            float | None, Form(ge=0, le=3600, allow_inf_nan=False, description="inpaint only: from (0)")
        ] = None,
        end_s: Annotated[
            float | None, Form(ge=0, le=3600, allow_inf_nan=False, description="inpaint only: to (the clip's end)")
        ] = None,
        duration_s: Annotated[
            float | None,
            Form(
                gt=0,
                le=MAX_VIDEO_S,
                allow_inf_nan=False,
                description="extend: new seconds; interpolate, image_to_video: the clip's (2)",
            ),
        ] = None,
        context_s: Annotated[
            float | None,
            Form(gt=0, le=60, allow_inf_nan=False, description="extend only: input seconds each chunk sees (1)"),
        ] = None,
        backwards: Annotated[bool | None, Form(description="extend only: make what comes before the upload")] = None,
        width: Annotated[
            int | None, Form(ge=1, le=8192, description="default: the upload's aspect, a trained shape")
        ] = None,
        height: Annotated[int | None, Form(ge=1, le=8192)] = None,
        seed: Annotated[int, Form(ge=0, le=2**63 - 1)] = 0,
        steps: Annotated[int | None, Form(ge=1, le=200)] = None,  # None: the model's own sampling
        guidance: Annotated[float | None, Form(ge=0, le=50, allow_inf_nan=False)] = None,
        scheduler: Annotated[str | None, Form(max_length=32)] = None,
        enhance: Annotated[bool, Form(description="rewrite the prompt into the model's caption style first")] = True,
    ) -> Job:
        """Queue an edit of an upload, as `tessera edit` does: extend, interpolate (with `file_b`),
        image_to_video (an image), restyle (`strength`), inpaint (`box` in pixels of the upload, `start_s`,
        `end_s`). Everything is checked before the job is stored: 400 refused by the prompt filter (with
        its category); 413/415/422 an unusable upload (file and file_b share the upload size limit); 422 a
        value outside what the task accepts. The uploads are kept with the job until its result passes the
        retention limit."""
        params = dict(
            task=task, prompt=prompt, negative_prompt=negative_prompt, strength=strength, box=box, start_s=start_s,
            end_s=end_s, duration_s=duration_s, context_s=context_s, backwards=backwards, width=width, height=height,
            seed=seed, steps=steps, guidance=guidance, scheduler=scheduler, enhance=enhance,
        )  # fmt: skip
        _check_edit_fields(params, file_b is not None)
        validator.check({k: v for k, v in params.items() if k in SAMPLING_FIELDS})  # the prompt filter, first
        uploads = []
        try:
            for f in (file, file_b) if file_b is not None else (file,):
                uploads.append(checked(f))
            params["resolved"] = validator.check_edit(params, [u.path for u in uploads])
            row = store.create_job(key["id"], "edit", params, cfg.max_queue, uploads=[u.path.name for u in uploads])
        except BaseException as e:
            for u in uploads:  # a refused edit keeps nothing
                u.path.unlink(missing_ok=True)
            if isinstance(e, QueueFull):
                raise HTTPException(429, f"the queue is full ({e}); retry later", {"Retry-After": "10"}) from e
            raise
        return job_view(store, row)

    @app.post("/v1/verify", responses={413: {"model": Problem}, 415: {"model": Problem}, 422: {"model": Problem}})
    def verify(
        key: SubmitKey, file: Annotated[UploadFile, File(description="a video to check for the Tessera watermark")]
    ) -> dict:
        """Read the mark, the C2PA manifest and the ledger record of an upload (as `tessera verify --json`)."""
        upload = checked(file)
        try:
            frames = read_frames(upload.path, VERIFY_FRAMES)
            if min(frames.shape[1:3]) < 32:
                raise UploadRejected(
                    422,
                    f"the upload is {frames.shape[2]}×{frames.shape[1]} px; the watermark needs at least 32 px a side",
                )
            report = _verify_report(upload.path, frames)
        finally:
            upload.path.unlink(missing_ok=True)
        ledger = report["ledger"]
        generation = (
            {k: ledger.get(k) for k in ("generation_id", "model_id", "created_at")} if ledger["found"] else None
        )
        return report | {"watermark": report["mark"].get("payload"), "generation": generation}


def _verify_report(path: Path, frames) -> dict:
    """The same report as `tessera verify --json`, with this installation's key and ledger."""
    from tessera.safety.keys import load_key
    from tessera.safety.ledger import Ledger
    from tessera.safety.provenance import verify_file

    try:
        key = load_key(None, create=False)
    except FileNotFoundError:
        key = None  # no key yet: legacy marks still read, keyed ones show as foreign
    return verify_file(path, frames, key, Ledger(None, key=key)).to_json()


SAMPLING_FIELDS = ("prompt", "negative_prompt", "seed", "steps", "guidance", "scheduler", "enhance")
EDIT_FIELDS = worker.EDIT_FIELDS


def _check_edit_fields(params: dict, has_file_b: bool) -> None:
    """Which fields the task takes (the values themselves are tessera.edit's to judge)."""
    task = params["task"]
    if (task == "interpolate") != has_file_b:
        what = "needs file_b, the video or image the clip ends at" if task == "interpolate" else "takes one file"
        raise InputError(f"{task} {what}; " + ("add file_b" if task == "interpolate" else "leave out file_b"))
    for field, tasks in EDIT_FIELDS.items():
        if params.get(field) is not None and task not in tasks:
            raise InputError(f"{field} is for {' and '.join(tasks)}, not {task}; leave it out")
    if task == "inpaint" and not params.get("box"):
        raise InputError("inpaint needs box=x0,y0,x1,y1 (pixels of the upload) around the region to change")


def _service_routes(app: FastAPI, store: JobStore, http_counts: Counter) -> None:
    static = resources.files("tessera.serve") / "static"

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness: the database answers; how many workers run and how many jobs wait."""
        counts = store.state_counts()
        return {"status": "ok", "workers": app.state.workers_alive(), "queued": counts.get("queued", 0)}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus text format: queue length, jobs by state, job latency, failures, HTTP responses."""
        return PlainTextResponse(
            prometheus_text(store, http_counts, app.state.workers_alive()), media_type="text/plain; version=0.0.4"
        )


LATENCY_BUCKETS_S = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


def prometheus_text(store: JobStore, http_counts: Counter, workers: int) -> str:
    counts = store.state_counts()
    lines = ["# HELP tessera_queue_length Jobs waiting for a worker.", "# TYPE tessera_queue_length gauge"]
    lines.append(f"tessera_queue_length {counts.get('queued', 0)}")
    lines += ["# HELP tessera_jobs Jobs in the database by state.", "# TYPE tessera_jobs gauge"]
    lines += [
        f'tessera_jobs{{state="{s}"}} {counts.get(s, 0)}' for s in ("queued", "running", "done", "failed", "cancelled")
    ]
    lines += ["# HELP tessera_job_failures_total Jobs that failed.", "# TYPE tessera_job_failures_total counter"]
    lines.append(f"tessera_job_failures_total {counts.get('failed', 0)}")
    lines += [
        "# HELP tessera_workers Worker processes alive.",
        "# TYPE tessera_workers gauge",
        f"tessera_workers {workers}",
    ]
    lat = store.latencies()
    lines += [
        "# HELP tessera_job_latency_seconds Submission to result, finished jobs.",
        "# TYPE tessera_job_latency_seconds histogram",
    ]
    lines += [f'tessera_job_latency_seconds_bucket{{le="{b}"}} {sum(v <= b for v in lat)}' for b in LATENCY_BUCKETS_S]
    lines += [
        f'tessera_job_latency_seconds_bucket{{le="+Inf"}} {len(lat)}',
        f"tessera_job_latency_seconds_sum {sum(lat):.3f}",
    ]
    lines.append(f"tessera_job_latency_seconds_count {len(lat)}")
    lines += [
        "# HELP tessera_http_responses_total HTTP responses by status code.",
        "# TYPE tessera_http_responses_total counter",
    ]
    lines += [f'tessera_http_responses_total{{code="{c}"}} {n}' for c, n in sorted(http_counts.items())]
    return "\n".join(lines) + "\n"
