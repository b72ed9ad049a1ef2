"""tessera serve: API, keys, persistence, limits, uploads, events, metrics (in process, tiny model)."""

import json
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import SMALL_JOB, make_keys, mp4_bytes, png_bytes, png_header_only, unexpected_files  # noqa: E402

from tessera.errors import UnsafePromptError  # noqa: E402
from tessera.export import probe, read_video, write_mp4  # noqa: E402
from tessera.safety.watermarker import Ledger, Watermarker  # noqa: E402
from tessera.serve import worker as worker_mod  # noqa: E402
from tessera.serve.app import create_app  # noqa: E402
from tessera.serve.db import MAX_ATTEMPTS, JobStore  # noqa: E402
from tessera.serve.settings import ServeConfig  # noqa: E402
from tessera.serve.supervisor import Supervisor  # noqa: E402
from tessera.serve.worker import Worker  # noqa: E402


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return worker_mod.load_pipeline(str(tiny_checkpoint), "cpu")


@pytest.fixture
def server(tmp_path, tiny_checkpoint, pipe, monkeypatch):
    """The app without worker processes; `srv.work()` runs one queued job in this process with the real Worker."""
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    # the pipe outlives the test: its mark and ledger follow this test's installation key and home
    monkeypatch.setattr(pipe, "watermarker", Watermarker())
    monkeypatch.setattr(pipe, "ledger", Ledger())
    cfg = ServeConfig(data_dir=tmp_path / "data", checkpoint=str(tiny_checkpoint), workers=0)
    app = create_app(cfg, supervise=False, pipe=pipe)
    with TestClient(app) as client:
        store = app.state.store
        srv = make_keys(store)
        srv.cfg, srv.client, srv.store, srv.tmp = cfg, client, store, tmp_path
        (tmp_path / "client").mkdir()  # the files a client makes; everything else is the server's
        srv.worker = Worker(
            store, pipe, cfg.videos_dir, owner="test-worker", lease_s=cfg.lease_s, uploads_dir=cfg.uploads_dir
        )
        srv.work = srv.worker.run_one
        yield srv


def submit(srv, headers=None, **overrides):
    return srv.client.post("/v1/videos", json={**SMALL_JOB, **overrides}, headers=headers or srv.alice)


# -- jobs ----------------------------------------------------------------------------------------------


def test_worker_warm_up_generates_without_recording(pipe):
    before = len(pipe.ledger.entries())
    worker_mod.warm_up(pipe)
    assert len(pipe.ledger.entries()) == before  # nobody receives the warm-up video
    out = pipe("a red circle", num_inference_steps=1, width=128, height=128, duration_s=0.5)
    assert len(pipe.ledger.entries()) == before + 1  # the real ledger is back in place
    assert pipe.ledger.get(out.generation_id) is not None


def test_job_runs_to_a_playable_video_served_with_ranges(server):
    r = submit(server)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "queued" and job["queue_position"] == 0
    assert server.work()["state"] == "done"
    job = server.client.get(f"/v1/jobs/{job['id']}", headers=server.alice).json()
    assert job["state"] == "done" and job["progress"]["step"] == job["progress"]["total"] == 2
    whole = server.client.get(job["video_url"], headers=server.alice)
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    part = server.client.get(job["video_url"], headers={**server.alice, "Range": "bytes=100-299"})
    assert part.status_code == 206 and part.content == whole.content[100:300]
    path = server.tmp / "client" / "got.mp4"
    path.write_bytes(whole.content)
    frames, fps = read_video(path)
    assert frames.shape == (9, 128, 128, 3) and fps == 8
    # the served file carries the watermark of this very job
    v = server.client.post("/v1/verify", files={"file": ("x.mp4", whole.content, "video/mp4")}, headers=server.bob)
    assert v.status_code == 200, v.text
    assert v.json()["generation"] is not None, v.json()
    assert v.json()["generation"]["generation_id"] == job["generation_id"]


def test_enhanced_prompt_is_part_of_the_job(server):
    job = submit(server, prompt="a crimson ball gliding leftwards over a pitch-black backdrop").json()
    assert job["enhanced_prompt"] and job["enhanced_prompt"] != job["params"]["prompt"]
    assert "red" in job["enhanced_prompt"] and "circle" in job["enhanced_prompt"]
    plain = submit(server, prompt="a red circle moving left", enhance=False).json()
    assert plain["enhanced_prompt"] is None and plain["unmapped_words"] == []


def test_fast_jobs_run_on_the_student_with_its_own_sampling(server, tiny_checkpoint, tmp_path, monkeypatch):
    """With a student configured, fast=true is accepted and runs in the student's steps, whatever `steps` says."""
    from tessera import checkpoint as ckpt

    tensors, config, meta = ckpt.load(tiny_checkpoint)
    student_path = tmp_path / "student.safetensors"
    sampling = '{"scheduler": "euler", "steps": 3, "guidance": 1.0}'
    ckpt.save(student_path, tensors, config, **{**meta, "sampling": sampling})
    monkeypatch.setattr(server.cfg, "student", str(student_path))
    server.worker.student = worker_mod.load_student(str(student_path), "cpu")
    server.worker.student.watermarker, server.worker.student.ledger = server.worker.pipe.watermarker, Ledger()
    r = submit(server, fast=True, steps=40, guidance=7.0)
    assert r.status_code == 202, r.text
    assert server.work()["state"] == "done"
    job = server.client.get(f"/v1/jobs/{r.json()['id']}", headers=server.alice).json()
    assert job["state"] == "done" and job["progress"]["total"] == 3
    assert Ledger().get(job["generation_id"]).record.settings["steps"] == 3


def test_a_job_without_sampling_settings_samples_as_the_model_says(server, pipe, monkeypatch):
    """steps, guidance and scheduler left out: the pipeline's own sampling (its checkpoint's), not a copy in the API."""
    monkeypatch.setattr(pipe, "sampling", {"steps": 3, "guidance": 1.0})
    job = {k: v for k, v in SMALL_JOB.items() if k not in ("steps", "guidance", "scheduler")}
    r = server.client.post("/v1/videos", json=job, headers=server.alice)
    assert r.status_code == 202, r.text
    assert server.work()["state"] == "done"
    done = server.client.get(f"/v1/jobs/{r.json()['id']}", headers=server.alice).json()
    settings = Ledger().get(done["generation_id"]).record.settings
    assert (settings["steps"], settings["guidance"]) == (3, 1.0) and done["progress"]["total"] == 3


def test_a_key_sees_only_its_own_jobs_and_files(server):
    job = submit(server).json()
    server.work()
    base = f"/v1/jobs/{job['id']}"
    for method, path in (("get", base), ("get", base + "/video"), ("get", base + "/events"), ("delete", base)):
        assert server.client.request(method, path, headers=server.bob).status_code == 404
        assert server.client.request(method, path).status_code == 401
        assert server.client.request(method, path, headers={"Authorization": "Bearer tsk_forged"}).status_code == 401
    assert server.client.get("/v1/jobs", headers=server.bob).json()["jobs"] == []
    assert [j["id"] for j in server.client.get("/v1/jobs", headers=server.alice).json()["jobs"]] == [job["id"]]


def test_bad_requests_answer_4xx_with_what_to_change(server):
    r = submit(server, width=100)
    assert r.status_code == 422 and "multiple of 32" in r.json()["detail"]
    assert submit(server, prompt="   ").status_code == 422
    assert submit(server, scheduler="nope").status_code == 422
    assert submit(server, steps=0).status_code == 422
    assert submit(server, duration_s=1000).status_code == 422
    assert submit(server, unknown_field=1).status_code == 422
    r = submit(server, fast=True)
    assert r.status_code == 501 and "student" in r.json()["detail"]
    bad = server.client.post(
        "/v1/videos", content=b'{"prompt": NaN', headers={**server.alice, "Content-Type": "application/json"}
    )
    assert bad.status_code == 422
    assert server.store.state_counts() == {}  # nothing was queued


class RefuseWord:
    """A prompt filter with one rule, to check how the server answers a refusal (the real filter has its own tests)."""

    def enforce(self, prompt: str) -> None:
        if "forbidden" in prompt:
            raise UnsafePromptError("violence", f"the prompt {prompt!r} asks for violence; describe something else")


def test_refused_prompt_answers_400_with_its_category(server, pipe, monkeypatch):
    monkeypatch.setattr(pipe, "prompt_filter", RefuseWord())
    r = submit(server, prompt="a forbidden scene")
    assert r.status_code == 400 and r.json()["category"] == "violence"
    assert submit(server).status_code == 202


def test_cancel_queued_and_running_jobs(server):
    queued = submit(server).json()
    r = server.client.delete(f"/v1/jobs/{queued['id']}", headers=server.alice)
    assert r.json()["state"] == "cancelled"
    assert server.work() is None  # nothing left to run
    running = submit(server, steps=5).json()
    job = server.store.claim("w", 30)
    assert server.store.report(job["id"], "w", 1, 5, 30)
    assert server.client.delete(f"/v1/jobs/{running['id']}", headers=server.alice).json()["state"] == "running"
    assert not server.store.report(job["id"], "w", 2, 5, 30)  # the worker learns at its next step


def test_events_stream_progress_until_the_job_ends(server):
    job = submit(server, steps=4).json()
    seen = []
    runner = threading.Timer(0.3, server.work)
    runner.start()
    with server.client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=server.alice) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
    runner.join()
    assert seen[0]["state"] in ("queued", "running") and seen[-1]["state"] == "done"
    steps = [e["progress"]["step"] for e in seen]
    assert steps == sorted(steps) and steps[-1] == 4


# -- persistence: leases, requeue, exactly once, retention ---------------------------------------------


def test_a_dead_workers_job_is_queued_again_and_finished_once(server):
    job = submit(server).json()
    dead = server.store.claim("dead-worker", lease_s=0.01)
    assert dead["id"] == job["id"]
    time.sleep(0.05)
    assert server.store.requeue_expired() == 1
    assert server.work()["state"] == "done"
    assert not server.store.finish(job["id"], "dead-worker", "x.mp4", "late")  # the stalled worker cannot finish it
    row = server.store.get_job(job["id"])
    assert (row["state"], row["completions"], row["attempts"]) == ("done", 1, 2)


def test_a_job_that_kills_its_worker_repeatedly_fails(server):
    job = submit(server).json()
    for _ in range(MAX_ATTEMPTS):
        server.store.claim("w", lease_s=-1)
        server.store.requeue_expired()
    row = server.store.get_job(job["id"])
    assert row["state"] == "failed" and "stopped" in row["error"]


def test_a_job_too_large_for_the_workers_memory_fails_saying_what_to_send(server, monkeypatch):
    def too_large(*args, **kwargs):
        torch.empty(10**15, dtype=torch.uint8)  # a real allocation failure of torch's CPU allocator

    monkeypatch.setattr("tessera.serve.worker.run_generation", too_large)
    job = submit(server).json()
    assert server.work()["state"] == "failed"
    error = server.store.get_job(job["id"])["error"]
    assert error.startswith("out of memory") and "duration_s" in error


def test_jobs_survive_a_restart_of_the_server(server, pipe):
    queued = submit(server).json()
    running = submit(server).json()
    server.store.claim("previous-run/w0", 60)
    cfg = server.cfg
    app = create_app(cfg, supervise=False, pipe=pipe)  # a new server process on the same folder
    with TestClient(app) as client:
        supervisor = Supervisor(cfg, app.state.store)
        supervisor.start()  # no workers (cfg.workers = 0): only the start-up requeue
        supervisor.stop()
        for job in (queued, running):
            assert client.get(f"/v1/jobs/{job['id']}", headers=server.alice).json()["state"] == "queued"
        assert server.work()["state"] == "done" and server.work()["state"] == "done"


def test_results_expire_after_the_retention_limit(server):
    job = submit(server).json()
    server.work()
    server.cfg.retention_s = 0.0
    Supervisor(server.cfg, server.store).tick()
    assert not list(server.cfg.videos_dir.glob("*.mp4"))
    r = server.client.get(f"/v1/jobs/{job['id']}/video", headers=server.alice)
    assert r.status_code == 410
    assert server.client.get(f"/v1/jobs/{job['id']}", headers=server.alice).json()["expired"] is True


# -- limits ------------------------------------------------------------------------------------------------


def test_full_queue_answers_429_with_retry_after(server):
    server.cfg.max_queue = 2
    assert submit(server).status_code == submit(server).status_code == 202
    r = submit(server)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    server.work()
    assert submit(server).status_code == 202


def test_per_key_rate_limit_and_quota(server):
    limited = make_keys(server.store, rate_per_min=2, quota_per_day=100)
    assert submit(server, limited.alice).status_code == 202
    assert submit(server, limited.alice).status_code == 202
    r = submit(server, limited.alice)
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 61
    assert submit(server, limited.bob).status_code == 202  # another key is not affected
    quota = make_keys(server.store, quota_per_day=1)
    assert submit(server, quota.alice).status_code == 202
    r = submit(server, quota.alice)
    assert r.status_code == 429 and "quota" in r.json()["detail"]


def test_oversized_bodies_answer_413(server):
    r = server.client.post("/v1/videos", json={**SMALL_JOB, "prompt": "x" * 100_000}, headers=server.alice)
    assert r.status_code == 413
    server.cfg.max_upload_bytes = 10_000  # read per request by the upload check
    big = mp4_bytes(server.tmp, frames=33, side=256)
    r = server.client.post("/v1/verify", files={"file": ("a.mp4", big, "video/mp4")}, headers=server.alice)
    assert r.status_code == 413


# -- uploads -------------------------------------------------------------------------------------------


def post_upload(srv, path, content, content_type, name="clip.mp4", **form):
    return srv.client.post(path, files={"file": (name, content, content_type)}, data=form, headers=srv.alice)


def test_malformed_uploads_are_refused_and_nothing_is_kept(server):
    good = mp4_bytes(server.tmp)
    server.cfg.max_upload_frames = 12
    cases = {
        "truncated mp4": (good[: len(good) // 3], "video/mp4", 422),
        "mp4 header only": (good[:40], "video/mp4", 422),
        "text sent as mp4": (b"hello, this is not a video at all", "video/mp4", 415),
        "wrong content type": (good, "text/html", 415),
        "huge dimensions": (png_header_only(60_000, 60_000), "image/png", 422),
        "too many frames": (mp4_bytes(server.tmp, frames=17), "video/mp4", 422),
        "empty": (b"", "video/mp4", 400),
    }
    for what, (content, ctype, status) in cases.items():
        for path in ("/v1/verify", "/v1/edits"):
            r = post_upload(server, path, content, ctype, task="extend", prompt="a red circle")
            assert r.status_code == status, (what, path, r.text)
            assert isinstance(r.json()["detail"], str)
    assert list(server.cfg.uploads_dir.iterdir()) == []


def test_upload_file_names_never_reach_the_disk(server, monkeypatch):
    monkeypatch.chdir(server.tmp)
    good = mp4_bytes(server.tmp)
    for name in ("../../escape.mp4", "/tmp/abs_escape.mp4", "..\\..\\win.mp4", "a/../../b.mp4", "\x00.mp4"):
        r = post_upload(server, "/v1/verify", good, "video/mp4", name=name)
        assert r.status_code == 200, r.text
    found = [p.name for p in server.tmp.parent.rglob("*escape*")] + [p.name for p in server.tmp.rglob("*win*")]
    assert found == []
    assert unexpected_files(server.tmp) == []  # verified uploads are not kept either


def test_verify_an_unmarked_video_finds_no_watermark(server):
    r = post_upload(server, "/v1/verify", mp4_bytes(server.tmp, seed=3), "video/mp4")
    assert r.status_code == 200 and r.json()["watermark"] is None and r.json()["generation"] is None


# -- edits ---------------------------------------------------------------------------------------------


class MarkSpy:
    """The real watermarker, keeping a copy of every video it is given (the frames before the mark)."""

    def __init__(self, inner):
        self.inner, self.unmarked = inner, []

    def mark(self, frames, *args, **kwargs):
        self.unmarked.append(frames.copy())
        return self.inner.mark(frames, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


EDIT_SAMPLING = dict(seed=3, steps=4, width=128, height=128)
EDIT_CASES = {  # API task -> (its own form fields, the pipeline method, that method's arguments, the files)
    "extend": ({"duration_s": 1}, "extend", {"duration_s": 1}, ("clip",)),
    "interpolate": ({"duration_s": 2}, "interpolate", {"duration_s": 2}, ("clip", "image")),
    "image_to_video": ({"duration_s": 1}, "animate", {"duration_s": 1}, ("image",)),
    "restyle": ({"strength": 0.5}, "restyle", {"strength": 0.5}, ("clip",)),
    "inpaint": (
        {"box": "32,32,96,96", "start_s": 0.5, "end_s": 1.0}, "inpaint",
        {"box": (32, 32, 96, 96), "from_s": 0.5, "to_s": 1.0}, ("clip",),
    ),
}  # fmt: skip


def client_files(srv) -> dict:
    """A 9-frame 128 px clip and a 128×96 image, as a client has them."""
    clip = srv.tmp / "client" / "clip.mp4"
    clip.write_bytes(mp4_bytes(srv.tmp, frames=9, side=128, seed=5))
    image = srv.tmp / "client" / "still.png"
    image.write_bytes(png_bytes(128, 96))
    return {"clip": clip, "image": image}


def post_edit(srv, files: list, **form):
    types = {".mp4": "video/mp4", ".png": "image/png"}
    parts = [(field, (p.name, p.read_bytes(), types[p.suffix])) for field, p in zip(("file", "file_b"), files)]
    return srv.client.post("/v1/edits", files=parts, data=form, headers=srv.alice)


@pytest.mark.parametrize("task", list(EDIT_CASES))
def test_each_edit_task_runs_to_the_video_the_pipeline_method_makes(server, pipe, monkeypatch, task):
    fields, method, kwargs, names = EDIT_CASES[task]
    files = [client_files(server)[n] for n in names]
    spy = MarkSpy(pipe.watermarker)
    monkeypatch.setattr(pipe, "watermarker", spy)
    r = post_edit(server, files, task=task, prompt="a blue square moving right", **fields, **EDIT_SAMPLING)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "edit" and job["params"]["task"] == task and job["enhanced_prompt"]
    assert len(list(server.cfg.uploads_dir.iterdir())) == len(files)  # kept with the job
    assert server.work()["state"] == "done"
    job = server.client.get(f"/v1/jobs/{job['id']}", headers=server.alice).json()
    assert job["state"] == "done" and job["progress"]["step"] == job["progress"]["total"] > 0
    got = server.tmp / "client" / "got.mp4"
    got.write_bytes(server.client.get(job["video_url"], headers=server.alice).content)
    info = probe(got)
    resolved = job["params"]["resolved"]
    assert (info["frames"], info["height"], info["width"]) == (resolved["frames"], 128, 128)
    assert Ledger().get(job["generation_id"]) is not None  # recorded, as a text-to-video job is
    served = spy.unmarked[-1]
    sampling = dict(num_inference_steps=4, guidance_scale=4.0, seed=3, width=128, height=128, scheduler="euler")
    direct = getattr(pipe, method)(*files, "a blue square moving right", **kwargs, **sampling)
    np.testing.assert_array_equal(served, spy.unmarked[-1])  # the same frames as the pipeline method's
    assert direct.frames.shape == (info["frames"], 128, 128, 3)


def test_an_edit_box_is_in_pixels_of_the_upload(server):
    from tessera import edit

    assert edit.box_to_output((64, 0, 128, 64), 256, 128, 128, 128) == (0, 0, 64, 64)  # 64 px cut off the left
    assert edit.box_to_output((0, 0, 100, 50), 200, 100, 256, 128) == (0, 0, 128, 64)  # scaled by 1.28
    wide = server.tmp / "client" / "wide.mp4"
    wide.write_bytes(mp4_bytes(server.tmp, frames=9, side=128, seed=1))  # written square, re-encoded wide below
    frames, _ = read_video(wide)
    wide = write_mp4(np.concatenate([frames, frames], axis=2), server.tmp / "client" / "wide256.mp4", fps=8)
    r = post_edit(server, [wide], task="inpaint", box="64,0,128,64", prompt="a green circle", **EDIT_SAMPLING)
    assert r.status_code == 202, r.text
    assert r.json()["params"]["resolved"]["box"] == [0, 0, 64, 64]
    r = post_edit(server, [wide], task="inpaint", box="0,0,60,60", prompt="a green circle", **EDIT_SAMPLING)
    assert r.status_code == 422 and "cropped away" in r.json()["detail"]


def test_refused_edits_queue_nothing_and_keep_no_upload(server, pipe, monkeypatch):
    monkeypatch.setattr(pipe, "prompt_filter", RefuseWord())
    files = client_files(server)
    clip, image = files["clip"], files["image"]
    short = server.tmp / "client" / "short.mp4"
    short.write_bytes(mp4_bytes(server.tmp, frames=3, side=128, seed=2))
    ok = dict(prompt="a red circle", **EDIT_SAMPLING)
    cases = {
        "unsafe prompt": ([clip], dict(ok, task="restyle", prompt="a forbidden scene"), 400, "violence"),
        "missing file_b": ([clip], dict(ok, task="interpolate"), 422, "file_b"),
        "file_b for restyle": ([clip, image], dict(ok, task="restyle"), 422, "file_b"),
        "box outside the upload": ([clip], dict(ok, task="inpaint", box="10,10,600,60"), 422, "inside the 128x128"),
        "box not four numbers": ([clip], dict(ok, task="inpaint", box="10,10,60"), 422, "four whole numbers"),
        "no box": ([clip], dict(ok, task="inpaint"), 422, "needs box"),
        "box for restyle": ([clip], dict(ok, task="restyle", box="0,0,8,8"), 422, "box is for inpaint"),
        "time range past the clip": ([clip], dict(ok, task="inpaint", box="0,0,8,8", end_s=3), 422, "time range"),
        "image for extend": ([image], dict(ok, task="extend"), 422, "image_to_video"),
        "video for image_to_video": ([clip], dict(ok, task="image_to_video"), 422, "1 frame"),
        "too short to restyle": ([short], dict(ok, task="restyle"), 422, "at least 5 frames"),
        "strength 1": ([clip], dict(ok, task="restyle", strength=1), 422, "strictly between 0 and 1"),
        "interpolation with no room": ([clip, image], dict(ok, task="interpolate", duration_s=1), 422, "no frames"),
        "size not a multiple": ([clip], dict(ok, task="restyle", width=100), 422, "multiple of"),
        "empty prompt": ([clip], dict(ok, task="restyle", prompt=" "), 422, "empty"),
    }
    for what, (paths, form, status, needle) in cases.items():
        r = post_edit(server, paths, **form)
        assert r.status_code == status and needle in r.json()["detail"], (what, r.text)
        if status == 400:
            assert r.json()["category"] == "violence"
    server.cfg.max_queue = 0
    assert post_edit(server, [clip], task="restyle", **ok).status_code == 429
    assert server.store.state_counts() == {}  # nothing was queued
    assert list(server.cfg.uploads_dir.iterdir()) == [] and unexpected_files(server.tmp) == []


def test_a_crashed_edit_runs_again_with_its_upload_and_the_upload_goes_with_the_result(server):
    clip = client_files(server)["clip"]
    job = post_edit(server, [clip], task="restyle", prompt="a red circle", **EDIT_SAMPLING).json()
    (upload,) = server.cfg.uploads_dir.iterdir()
    assert server.store.claim("dead-worker", lease_s=0.01)["id"] == job["id"]
    time.sleep(0.05)
    assert server.store.requeue_expired() == 1 and upload.is_file()
    assert server.work()["state"] == "done"
    row = server.store.get_job(job["id"])
    assert (row["state"], row["attempts"], row["completions"]) == ("done", 2, 1)
    stray = server.cfg.uploads_dir / "0123.mp4"  # an upload whose request stopped before its job was stored
    stray.write_bytes(clip.read_bytes())
    supervisor = Supervisor(server.cfg, server.store)
    supervisor.start()  # cfg.workers = 0: only the start-up tidying
    supervisor.stop()
    assert upload.is_file() and not stray.exists()  # the job still holds its upload
    server.cfg.retention_s = 0.0
    supervisor.tick()
    assert list(server.cfg.uploads_dir.iterdir()) == [] and list(server.cfg.videos_dir.iterdir()) == []
    assert server.store.get_job(job["id"])["uploads"] is None


def test_a_database_from_before_edits_gains_the_uploads_column(tmp_path):
    from tessera.serve.db import SCHEMA

    db = tmp_path / "jobs.sqlite3"
    old = sqlite3.connect(db)
    old.executescript(SCHEMA.replace(", uploads TEXT", ""))
    old.execute(
        "INSERT INTO jobs (id, key_id, kind, params, state, created) VALUES ('a', 'k', 'video', '{}', 'done', 1)"
    )
    old.commit()
    old.close()
    stores = [JobStore(db) for _ in range(2)]  # opened twice: the column is added once
    assert stores[0].get_job("a")["uploads"] is None
    job = stores[1].create_job("k", "edit", {}, max_queue=5, uploads=["x.mp4"])
    assert stores[0].upload_names() == {"x.mp4"} and job["kind"] == "edit"


# -- service routes, page, schema ------------------------------------------------------------------------


def test_metrics_in_prometheus_text_format(server):
    for _ in range(3):
        submit(server)
    server.work()
    text = server.client.get("/metrics").text
    values = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values["tessera_queue_length"] == 2
    assert values['tessera_jobs{state="done"}'] == 1
    assert values['tessera_job_latency_seconds_bucket{le="+Inf"}'] == values["tessera_job_latency_seconds_count"] == 1
    assert values['tessera_http_responses_total{code="202"}'] == 3
    assert server.client.get("/healthz").json()["queued"] == 2


def test_page_and_schema_are_served(server):
    page = server.client.get("/")
    assert page.status_code == 200
    for element in (
        'id="prompt"',
        'id="progress"',
        'id="player"',
        'id="gallery"',
        'id="box-canvas"',
        'id="edit-file-b"',
        'id="edit-start"',
        'id="verify-file"',
    ):
        assert element in page.text
    assert "EventSource" not in server.client.get("/static/app.js").text  # the key never goes into a URL
    schema = server.client.get("/openapi.json").json()
    for path in (
        "/v1/videos",
        "/v1/edits",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/video",
        "/v1/verify",
        "/healthz",
        "/metrics",
    ):
        assert path in schema["paths"]
    assert (
        "access-control-allow-origin"
        not in server.client.get("/healthz", headers={"Origin": "http://evil.example"}).headers
    )


def test_keys_cli_stores_only_hashes_and_revokes(tmp_path, capsys):
    from tessera.cli import main

    data = str(tmp_path / "data")
    assert main(["keys", "--data", data, "add", "carol", "--rate-per-min", "5"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["key"].startswith("tsk_")
    db = tmp_path / "data" / "jobs.sqlite3"
    dump = "\n".join(sqlite3.connect(db).iterdump())
    assert added["key"] not in dump and added["key"][4:] not in dump
    assert main(["keys", "--data", data, "list"]) == 0
    listed = json.loads(capsys.readouterr().out)["keys"]
    assert [(k["id"], k["name"], k["rate_per_min"]) for k in listed] == [(added["id"], "carol", 5)]
    assert "key" not in listed[0] and "hash" not in listed[0]
    from tessera.serve.keys import lookup

    assert lookup(JobStore(db), added["key"])["id"] == added["id"]
    assert main(["keys", "--data", data, "revoke", added["id"]]) == 0
    assert lookup(JobStore(db), added["key"]) is None
    assert main(["keys", "--data", data, "revoke", added["id"]]) == 2
    assert main(["keys", "--data", data, "add", "dave", "--quota-per-day", "0"]) == 2
    for name in ("", "   ", "a\nb", "x" * 101):  # a name says who the key is for, on one line
        assert main(["keys", "--data", data, "add", name]) == 2
        assert "printable" in capsys.readouterr().err


def test_fuzzed_requests_from_the_schema_never_get_5xx(server):
    fuzz(server, examples=5)


@pytest.mark.slow
def test_fuzzed_requests_from_the_schema_never_get_5xx_long(server):
    fuzz(server, examples=100)


def fuzz(server, examples: int) -> None:
    """Every operation of the published schema, with generated parameters and bodies, as key alice."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_asgi("/openapi.json", server.client.app)
    server.cfg.max_queue = 10_000
    statuses = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            response = case.call(headers=server.alice)
            statuses.append(response.status_code)
            unfinished = response.status_code == 501 and case.path == "/v1/videos"  # fast=true without a student
            assert response.status_code < 500 or unfinished, (
                case.method,
                case.path,
                response.status_code,
                response.text,
            )

        run()
    assert len(statuses) > 2 * examples and any(s < 300 for s in statuses)
    assert unexpected_files(server.tmp) == []


def test_serve_cli_refuses_a_second_server_on_one_data_folder(tmp_path, capsys):
    import fcntl

    from tessera.cli import main

    data = tmp_path / "data"
    data.mkdir()
    with open(data / "server.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running server holds it
        assert main(["serve", "--data", str(data), "--workers", "0", "--port", str(free_port())]) == 2
    assert "another tessera serve uses" in capsys.readouterr().err
    assert main(["serve", "--data", str(data), "--workers", "-1"]) == 2


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_cli_refuses_what_cannot_serve_before_loading_a_model(tmp_path, capsys):
    import socket

    from tessera.cli import main

    vae_only = Path(__file__).resolve().parents[1] / "tessera" / "weights" / "tessera-footage-vae.safetensors"
    (tmp_path / "file").write_text("x")
    for args, needle in (
        (["--port", "70000"], "--port 70000"),
        (["--port", "0"], "--port 0"),
        (["--workers", "1000"], "--workers 1000"),
        (["--host", "not a host"], "--host 'not a host'"),
        (["--data", str(tmp_path / "file")], "--data"),
        (["--checkpoint", str(tmp_path / "missing.safetensors")], "does not exist"),
        (["--checkpoint", str(vae_only)], "not a generation checkpoint"),
        (["--retention-h", "nan"], "--retention-h"),
        (["--max-queue", "0"], "--max-queue 0"),
    ):
        assert main(["serve", "--data", str(tmp_path / "data"), *args]) == 2, args
        assert needle in capsys.readouterr().err, args
    with socket.socket() as taken:  # a port something else listens on
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--data", str(tmp_path / "data"), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # nothing made
