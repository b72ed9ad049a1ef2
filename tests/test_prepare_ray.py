"""`tessera prepare --ray`: the same dataset as the local run, also after a killed Ray worker or a killed driver."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from fixtures.videos import write_bad_files, write_world_videos

from tessera import checkpoint
from tessera.cli import main
from tessera.data.ingest.prepare import read_manifest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'tessera[ray]'; the dev extra has it)")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> str:
    """A local Ray instance of 2 CPUs owned by this test process; its address for drivers in other processes.

    Its workers import Tessera and the test helpers (`fixtures.stages`) from this checkout."""
    with pytest.MonkeyPatch.context() as mp:  # the workers inherit the environment of ray.init
        mp.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 << 20
        )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def crawl(tmp_path_factory) -> Path:
    """Five square and two landscape clips, and one file of every bad kind (rejected with a reason)."""
    src = tmp_path_factory.mktemp("ray_crawl")
    good = write_world_videos(src, 5, seed=5, height_px=64, width_px=64)
    write_world_videos(src, 2, seed=6, height_px=64, width_px=96, first=10)
    write_bad_files(src / "bad", good[0])
    return src


def _args(src, out: Path, ckpt: Path) -> list[str]:
    return ["prepare", str(src), "--out", str(out), "--checkpoint", str(ckpt), "--shapes", "64x64,96x64"] + [
        "--frames", "9", "--clips-per-shard", "2", "--quiet"
    ]  # fmt: skip


@pytest.fixture(scope="module")
def local_run(crawl, tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "ds"
    assert main(_args(crawl, out, tiny_checkpoint)) == 0
    return out


def assert_same_dataset(a: Path, b: Path) -> None:
    """Byte-identical manifest and summary; shards with the same names, tensors, texts and metadata."""
    assert (a / "manifest.jsonl").read_bytes() == (b / "manifest.jsonl").read_bytes()
    assert (a / "summary.json").read_bytes() == (b / "summary.json").read_bytes()
    shards = sorted(p.name for p in (a / "latents").iterdir())
    assert shards and shards == sorted(p.name for p in (b / "latents").iterdir())
    for name in shards:  # safetensors orders its header as it likes: compare contents
        (ta, ca, ma), (tb, cb, mb) = checkpoint.load(a / "latents" / name), checkpoint.load(b / "latents" / name)
        assert ca == cb and ma == mb and ta.keys() == tb.keys(), name
        assert all(torch.equal(ta[k], tb[k]) for k in ta), name
    assert not any((b / "work" / "latents").iterdir()), "per-clip latents are removed once sharded"


def test_ray_run_writes_the_local_runs_manifest_and_shards(
    cluster, crawl, tiny_checkpoint, local_run, tmp_path, capsys
):
    out = tmp_path / "ds"
    capsys.readouterr()
    assert main([*_args(crawl, out, tiny_checkpoint), "--ray", cluster]) == 0
    summary = json.loads(capsys.readouterr().out)  # stdout stays the JSON channel
    assert summary["stage_timings"]["encode"]["items"] == summary["kept"] > 0
    assert_same_dataset(local_run, out)
    bad = {Path(r["source"]).name: r["reasons"] for r in read_manifest(out / "manifest.jsonl") if "bad" in r["source"]}
    assert bad == {
        "empty.mp4": ["empty_file"],
        "truncated.mp4": ["not_a_video"],
        "noise.mov": ["not_a_video"],
        "notes.mkv": ["not_a_video"],
        "song.mp4": ["no_video_stream"],
    }


def _descendants(pid: int) -> list[int]:
    """Process ids below `pid` (read from /proc), so only this test's own Ray workers are ever touched."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def test_a_killed_ray_worker_during_encode_loses_nothing(cluster, crawl, tiny_checkpoint, local_run, tmp_path):
    out, codes = tmp_path / "ds", []
    run = threading.Thread(target=lambda: codes.append(main([*_args(crawl, out, tiny_checkpoint), "--ray", cluster])))
    run.start()
    killed = []
    while run.is_alive() and not killed:
        for pid in _descendants(os.getpid()):
            if _title(pid).startswith("ray::tessera-encode"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
        time.sleep(0.01)
    run.join()
    assert killed, "prepare finished before a worker could be killed during encode"
    assert codes == [0]
    assert_same_dataset(local_run, out)
    assert "crashed" not in (out / "manifest.jsonl").read_text()


@pytest.mark.slow
def test_a_killed_driver_resumes_to_the_same_dataset(cluster, crawl, tiny_checkpoint, local_run, tmp_path):
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "tessera", *_args(crawl, out, tiny_checkpoint), "--ray", cluster]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any((out / "work" / "latents").glob("*.safetensors")):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "prepare finished before it could be killed"
    assert not (out / "manifest.jsonl").exists()

    assert main([*_args(crawl, out, tiny_checkpoint), "--ray", cluster]) == 0
    assert_same_dataset(local_run, out)


def test_an_item_that_kills_every_ray_worker_it_runs_on_is_rejected_as_crashed(cluster, tmp_path):
    from fixtures.stages import echo_or_die

    from tessera.data.ingest.prepare import Journal
    from tessera.data.ingest.ray_runner import RayRunner

    keys = [f"clip{i}" for i in range(6)]
    with RayRunner(cluster, workers=2, progress=False, max_retries=1) as runner:
        done = runner.run("crash", Journal(tmp_path / "j.jsonl"), [(k, echo_or_die, (k, "clip2")) for k in keys])
    assert done["clip2"]["reason"] == "crashed", done["clip2"]
    assert {k: done[k] for k in keys if k != "clip2"} == {k: {"key": k} for k in keys if k != "clip2"}
    assert Journal(tmp_path / "j.jsonl").done == done
