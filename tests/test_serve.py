"""tessera serve: API, keys, persistence, limits, uploads, events, metrics (in process, tiny model)."""

import json
import sqlite3
import threading
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import SMALL_JOB, make_keys, mp4_bytes, png_bytes, png_header_only, unexpected_files  # noqa: E402

from tessera.errors import UnsafePromptError  # noqa: E402
from tessera.export import read_video  # noqa: E402
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
        srv.worker = Worker(store, pipe, cfg.videos_dir, owner="test-worker", lease_s=cfg.lease_s)
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
            r = post_upload(server, path, content, ctype, task="extend")
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


def test_edit_tasks_validate_the_upload_then_answer_501(server):
    video, image = mp4_bytes(server.tmp), png_bytes(128, 96)
    r = post_upload(server, "/v1/edits", video, "video/mp4", task="inpaint", box="10,10,60,60", prompt="a blue square")
    assert r.status_code == 501 and "not available in this model yet" in r.json()["detail"]
    assert post_upload(server, "/v1/edits", video, "video/mp4", task="inpaint", box="10,10,600,60").status_code == 422
    assert post_upload(server, "/v1/edits", video, "video/mp4", task="inpaint").status_code == 422
    assert post_upload(server, "/v1/edits", video, "video/mp4", task="image_to_video").status_code == 422
    assert post_upload(server, "/v1/edits", image, "image/png", name="a.png", task="image_to_video").status_code == 501
    assert post_upload(server, "/v1/edits", video, "video/mp4", task="teleport").status_code == 422
    assert list(server.cfg.uploads_dir.iterdir()) == []


def test_verify_an_unmarked_video_finds_no_watermark(server):
    r = post_upload(server, "/v1/verify", mp4_bytes(server.tmp, seed=3), "video/mp4")
    assert r.status_code == 200 and r.json()["watermark"] is None and r.json()["generation"] is None


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
            unfinished = response.status_code == 501 and case.path in ("/v1/edits", "/v1/videos")
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
        assert main(["serve", "--data", str(data), "--workers", "0"]) == 2
    assert "another tessera serve uses" in capsys.readouterr().err
    assert main(["serve", "--data", str(data), "--workers", "-1"]) == 2
