"""tessera serve as real processes: kill -9 of a worker and of the server, a headless browser, load."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from serve_helpers import alive, bearer, children, free_port, start_server  # noqa: E402

from tessera.export import read_video  # noqa: E402
from tessera.serve.db import JobStore  # noqa: E402
from tessera.serve.keys import create_key  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LONG_JOB = {"prompt": "a blue square moving right on a gray background", "width": 128, "height": 128, "duration_s": 1.0}


@pytest.fixture
def env(tmp_path):
    return {
        **os.environ,
        "TESSERA_HOME": str(tmp_path / "home"),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.mark.slow
def test_kill_9_of_a_worker_and_of_the_server_loses_and_repeats_no_job(tmp_path, tiny_checkpoint, env):
    data, port, log = tmp_path / "data", free_port(), tmp_path / "serve.log"
    store = JobStore(data / "jobs.sqlite3")
    key = bearer(create_key(store, "alice")[1])
    server = start_server(data, tiny_checkpoint, port, workers=2, env=env, log=log)
    try:
        ids = kill_a_worker_then_the_server(server, store, key, f"http://127.0.0.1:{port}")
    finally:
        server.kill()
        server.wait()
    url = f"http://127.0.0.1:{port}"

    # 3. start again: every accepted job finishes exactly once and its video is served
    server = start_server(data, tiny_checkpoint, port, workers=2, env=env, log=log)
    try:
        wait_for(lambda: all(store.get_job(i)["state"] == "done" for i in ids), 300, "every job to finish")
        rows = [store.get_job(i) for i in ids]
        assert all(r["completions"] == 1 for r in rows)
        assert sum(r["attempts"] - 1 for r in rows) >= 2  # both kills interrupted a running job
        for r in rows:
            video = httpx.get(f"{url}/v1/jobs/{r['id']}/video", headers=key)
            assert video.status_code == 200
            path = tmp_path / f"{r['id']}.mp4"
            path.write_bytes(video.content)
            assert read_video(path)[0].shape == (9, 128, 128, 3)
        assert sorted(p.name for p in (data / "videos").iterdir()) == sorted(f"{i}.mp4" for i in ids)
    finally:
        server.terminate()
        server.wait(30)


def kill_a_worker_then_the_server(server, store, key, url) -> list[str]:
    """Submit 6 jobs, kill -9 a worker while one runs, then the server while one runs; the job ids."""
    ids = []
    for seed in range(6):
        r = httpx.post(f"{url}/v1/videos", json={**LONG_JOB, "seed": seed, "steps": 150}, headers=key)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    running = lambda: [j for j in map(store.get_job, ids) if j["state"] == "running" and j["step"] >= 1]

    # 1. kill -9 a worker in the middle of a job: the supervisor starts another, the job runs again
    wait_for(running, 120, "a job to start denoising")
    workers = children(server.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    wait_for(
        lambda: len([p for p in children(server.pid) if alive(p)]) == 2 and workers[0] not in children(server.pid),
        120,
        "a new worker",
    )

    # 2. kill -9 the server while jobs run: its workers die with it
    wait_for(running, 120, "a job to run after the worker restart")
    workers = [p for p in children(server.pid) if alive(p)]
    server.send_signal(signal.SIGKILL)
    server.wait()
    wait_for(lambda: not any(alive(p) for p in workers), 10, "the workers to die with the server")
    assert any(j["state"] in ("queued", "running") for j in map(store.get_job, ids))

    return ids


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install -y chromium)")
def test_page_in_a_headless_browser_generates_and_plays(tmp_path, tiny_checkpoint, env):
    """Type a prompt, watch the progress bar move, play the result. TESSERA_SCREENSHOT=PATH keeps a
    screenshot; TESSERA_SERVE_CHECKPOINT=bundled runs the bundled model instead of the tiny one."""
    sync_api = pytest.importorskip("playwright.sync_api")
    checkpoint = None if os.environ.get("TESSERA_SERVE_CHECKPOINT") == "bundled" else tiny_checkpoint
    data, port = tmp_path / "data", free_port()
    secret = create_key(JobStore(data / "jobs.sqlite3"), "browser")[1]
    server = start_server(data, checkpoint, port, workers=1, env=env, log=tmp_path / "serve.log")
    try:
        with signed_in_page(sync_api, port, secret) as page:
            page.fill("#prompt", "a yellow triangle spinning on a navy background")
            page.click("details summary")  # the steps field is under "More"
            page.fill("#steps", "25" if checkpoint is None else "120")
            page.click("#generate")
            seen = progress_values(page)
            page.wait_for_function("document.getElementById('player').readyState >= 2", timeout=60_000)
            video = page.evaluate(
                "(() => { const v = document.getElementById('player');"
                " return {duration: v.duration, readyState: v.readyState, w: v.videoWidth, h: v.videoHeight, error: v.error}; })()"
            )
            page.wait_for_function("document.getElementById('player').currentTime > 0", timeout=30_000)
            page.wait_for_selector("#gallery .card[data-state=done]")
            shot = os.environ.get("TESSERA_SCREENSHOT") or str(tmp_path / "page.png")
            page.screenshot(path=shot)
    finally:
        server.terminate()
        server.wait(30)
    assert len({v for v in seen if 0 < v < 1}) >= 2, seen  # the bar moved through intermediate steps
    assert seen[-1] == 1
    assert video["error"] is None and video["readyState"] >= 2
    assert (video["w"], video["h"]) == (256, 256)
    assert abs(video["duration"] - 17 / 8) < 0.2  # 17 frames at 8 fps


@contextlib.contextmanager
def signed_in_page(sync_api, port: int, secret: str):
    """The server's page in headless Chromium, with the API key entered; the browser closes after."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.fill("#key", secret)
            page.dispatch_event("#key", "change")
            yield page
        finally:
            browser.close()


def progress_values(page) -> list[float]:
    """The progress bar's value, sampled until the job is done."""
    seen = []
    deadline = time.time() + 600
    while time.time() < deadline:
        seen.append(page.eval_on_selector("#progress", "p => p.value"))
        if page.eval_on_selector("#job", "j => j.dataset.state") == "done":
            seen.append(page.eval_on_selector("#progress", "p => p.value"))
            return seen
        time.sleep(0.05)
    raise AssertionError(f"the job did not finish; progress seen: {seen[-5:]}")


@pytest.mark.slow
def test_short_load_run_has_no_5xx_and_loses_no_job(tmp_path, tiny_checkpoint, env):
    """benchmarks/serve.py on a short, small load: the properties, not the figures."""
    out = tmp_path / "load.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "serve.py"), "--checkpoint", str(tiny_checkpoint), "--skip-warm"]
    cmd += ["--load-s", "15", "--pollers", "20", "--submitters", "4", "--out", str(out)]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, timeout=900)
    load = json.loads(out.read_text())["load"]
    assert load["server_errors_5xx"] == 0 and load["lost_jobs"] == 0
    assert load["accepted_job_states"] == {"done": load["accepted_jobs"]}
    assert load["status_codes"]["200"] > 100


@pytest.mark.slow
def test_kill_9_of_a_worker_mid_edit_runs_the_edit_again_on_its_upload(tmp_path, tiny_checkpoint, env):
    from serve_helpers import mp4_bytes

    data, port = tmp_path / "data", free_port()
    store = JobStore(data / "jobs.sqlite3")
    key = bearer(create_key(store, "alice")[1])
    url = f"http://127.0.0.1:{port}"
    server = start_server(data, tiny_checkpoint, port, workers=1, env=env, log=tmp_path / "serve.log")
    try:
        clip = ("clip.mp4", mp4_bytes(tmp_path, frames=9, side=128), "video/mp4")
        form = {"task": "restyle", "prompt": "a red circle", "steps": "150", "width": "128", "height": "128"}
        r = httpx.post(f"{url}/v1/edits", files={"file": clip}, data=form, headers=key, timeout=60)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        wait_for(lambda: store.get_job(job_id)["step"] >= 1, 120, "the edit to start denoising")
        (worker,) = [p for p in children(server.pid) if alive(p)]
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: store.get_job(job_id)["state"] == "done", 300, "the edit to finish after the restart")
        row = store.get_job(job_id)
        assert (row["attempts"], row["completions"]) == (2, 1)
        assert [p.name for p in (data / "uploads").iterdir()] == json.loads(row["uploads"])  # still held
        video = httpx.get(f"{url}/v1/jobs/{job_id}/video", headers=key)
        assert video.status_code == 200
        (tmp_path / "got.mp4").write_bytes(video.content)
        assert read_video(tmp_path / "got.mp4")[0].shape == (9, 128, 128, 3)
    finally:
        server.terminate()
        server.wait(30)


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install -y chromium)")
def test_page_in_a_headless_browser_edits_and_plays(tmp_path, tiny_checkpoint, env):
    """Upload a clip on the Edit tab, restyle it, and play the result in the shared player."""
    from serve_helpers import mp4_bytes

    sync_api = pytest.importorskip("playwright.sync_api")
    data, port = tmp_path / "data", free_port()
    secret = create_key(JobStore(data / "jobs.sqlite3"), "browser")[1]
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(mp4_bytes(tmp_path, frames=9, side=128))
    server = start_server(data, tiny_checkpoint, port, workers=1, env=env, log=tmp_path / "serve.log")
    try:
        with signed_in_page(sync_api, port, secret) as page:
            page.click("button[data-tab=edit]")
            page.select_option("#edit-task", "restyle")
            assert page.is_visible("#edit-strength") and not page.is_visible("#edit-file-b")
            page.set_input_files("#edit-file", str(clip))
            page.fill("#edit-prompt", "a blue square on a navy background")
            page.click("#edit-form button[type=submit]")
            page.wait_for_function("document.getElementById('job').dataset.state === 'done'", timeout=300_000)
            page.wait_for_function("document.getElementById('player').readyState >= 2", timeout=60_000)
            video = page.evaluate(
                "(() => { const v = document.getElementById('player');"
                " return {w: v.videoWidth, h: v.videoHeight, error: v.error}; })()"
            )
            result = page.text_content("#edit-result")
    finally:
        server.terminate()
        server.wait(30)
    assert video["error"] is None and (video["w"], video["h"]) == (256, 256), (video, result)
    assert "256x256, 9 frames" in result
