"""Crash-safe and data-parallel DiT training, run in real separate processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tessera import checkpoint
from tessera.config import PRESETS
from tessera.train import TrainConfig, train_vae

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny_dit.py"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae")
    return train_vae(out, PRESETS["tiny"].vae, TrainConfig(steps=1, batch=1, warmup_steps=1), frames=5, size_px=32)


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _losses(out: Path) -> dict[int, float]:
    """Loss per step from the log; a resumed run re-logs steps after its last checkpoint, the last entry wins."""
    rows = [json.loads(line) for line in (out / "dit_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _dit(out: Path) -> dict[str, torch.Tensor]:
    tensors, _, _ = checkpoint.load(out / "tessera-small.safetensors")
    return checkpoint.split_prefix(tensors, "dit")


def _run(args, **kw):
    return subprocess.run([sys.executable, *args], env=_env(), cwd=ROOT, check=True, capture_output=True, **kw)


def test_kill_9_then_resume_continues_the_same_run(tmp_path, tiny_vae):
    steps = 12
    _run([str(SCRIPT), str(tiny_vae), str(tmp_path / "straight"), str(steps)])
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tiny_vae), str(out), str(steps), "--slow-checkpoints"],
        env=_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pointer = out / "dit_state.json"
    deadline = time.time() + 300
    while not (pointer.exists() and json.loads(pointer.read_text())["step"] >= 4):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(pointer.read_text())["step"]
    assert killed_at < steps
    _run([str(SCRIPT), str(tiny_vae), str(out), str(steps)])
    a, b = _losses(tmp_path / "straight"), _losses(out)
    assert sorted(a) == sorted(b) == list(range(steps))
    assert all(abs(a[s] - b[s]) < 1e-6 for s in a), (a, b)
    wa, wb = _dit(tmp_path / "straight"), _dit(out)
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-2, rtol=0), k  # bf16 storage


@pytest.mark.slow
def test_two_process_fsdp_matches_one_process(tmp_path, tiny_vae):
    """2 ranks x half the batch == 1 rank x the whole batch, and each rank keeps half the state."""
    steps = 20
    _run([str(SCRIPT), str(tiny_vae), str(tmp_path / "one"), str(steps)])
    _run(
        [
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            str(SCRIPT),
            str(tiny_vae),
            str(tmp_path / "two"),
            str(steps),
        ],
        timeout=600,
    )
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == list(range(steps))
    diffs = [abs(one[s] - two[s]) for s in one]
    assert max(diffs) < 1e-3, diffs

    def state_bytes(path: Path) -> int:
        tensors, _, _ = checkpoint.load(path)
        return sum(v.numel() * v.element_size() for k, v in tensors.items() if k.startswith(("model.", "opt.")))

    single = state_bytes(next((tmp_path / "one").glob("dit_state.step*.rank0.safetensors")))
    ranks = [state_bytes(p) for p in sorted((tmp_path / "two").glob("dit_state.step*.rank*.safetensors"))]
    assert len(ranks) == 2
    assert all(r < 0.6 * single for r in ranks), (single, ranks)
    (tmp_path / "figures.json").write_text(json.dumps({"max_loss_diff": max(diffs), "single": single, "ranks": ranks}))
    print(json.dumps({"max_loss_diff": max(diffs), "state_bytes_one_process": single, "state_bytes_per_rank": ranks}))
