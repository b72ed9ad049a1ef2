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
from tessera.training import VAETrainConfig, saved_step, train_vae

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny_dit.py"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae")
    return train_vae(out, PRESETS["tiny"].vae, VAETrainConfig(steps=1, batch=1, warmup_steps=1, frames=5, size_px=32))


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


def _train(out: Path, vae: Path, steps: int, processes: int = 1, *extra: str):
    """The tiny DiT trained by `processes` processes (torchrun when more than one)."""
    launch = ["-m", "torch.distributed.run", "--nproc-per-node", str(processes)] if processes > 1 else []
    return _run([*launch, str(SCRIPT), str(vae), str(out), str(steps), *extra], timeout=600)


def _state(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors, _, meta = checkpoint.load(out / "state.safetensors")
    return tensors, meta


def test_kill_9_then_resume_continues_the_same_run(tmp_path, tiny_vae):
    steps = 12
    _train(tmp_path / "straight", tiny_vae, steps)
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tiny_vae), str(out), str(steps), "--slow-checkpoints"],
        env=_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while saved_step(out / "state.safetensors") < 4:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = saved_step(out / "state.safetensors")
    assert killed_at < steps
    _train(out, tiny_vae, steps)
    a, b = _losses(tmp_path / "straight"), _losses(out)
    assert sorted(a) == sorted(b) == list(range(steps))
    assert all(abs(a[s] - b[s]) < 1e-6 for s in a), (a, b)
    wa, wb = _dit(tmp_path / "straight"), _dit(out)
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-2, rtol=0), k  # bf16 storage


@pytest.mark.slow
def test_two_process_fsdp_matches_one_process(tmp_path, tiny_vae):
    """2 ranks x half the batch == 1 rank x the whole batch, and each rank holds half the state."""
    steps = 20
    _train(tmp_path / "one", tiny_vae, steps)
    _train(tmp_path / "two", tiny_vae, steps, 2)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == list(range(steps))
    diffs = [abs(one[s] - two[s]) for s in one]
    assert max(diffs) < 1e-3, diffs

    def held(out: Path) -> list[int]:
        return [json.loads(p.read_text())["bytes"] for p in sorted(out.glob("shard_bytes.rank*.json"))]

    (single,), ranks = held(tmp_path / "one"), held(tmp_path / "two")
    assert len(ranks) == 2 and all(r < 0.6 * single for r in ranks), (single, ranks)
    # the saved state is whole either way: the same tensors, the same shapes
    (ta, _), (tb, meta) = _state(tmp_path / "one"), _state(tmp_path / "two")
    assert meta["world"] == "2" and {k: v.shape for k, v in ta.items()} == {k: v.shape for k, v in tb.items()}
    print(json.dumps({"max_loss_diff": max(diffs), "bytes_one_process": single, "bytes_per_rank": ranks}))


@pytest.mark.slow
@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_resume_with_another_number_of_processes_continues_the_run(tmp_path, tiny_vae, before, after):
    """Half a run on `before` processes, the rest on `after`: the same run as one uninterrupted process."""
    steps, half = 8, 4
    _train(tmp_path / "straight", tiny_vae, steps)
    out = tmp_path / "resharded"
    _train(out, tiny_vae, steps, before, "--stop-at", str(half))
    assert _state(out)[1]["world"] == str(before) and saved_step(out / "state.safetensors") == half
    _train(out, tiny_vae, steps, after)
    assert _state(out)[1]["world"] == str(after) and saved_step(out / "state.safetensors") == steps
    a, b = _losses(tmp_path / "straight"), _losses(out)
    assert sorted(a) == sorted(b) == list(range(steps))
    diffs = [abs(a[s] - b[s]) for s in a]
    assert max(diffs) < 1e-3, diffs  # fp32 training: only the order of sums differs
    (sa, _), (sb, _) = _state(tmp_path / "straight"), _state(out)
    trained = [k for k in sa if k.startswith(("model.", "ema.", "opt."))]
    assert trained and set(trained) == {k for k in sb if k.startswith(("model.", "ema.", "opt."))}
    for k in trained:  # within bf16 rounding of the uninterrupted run
        assert torch.allclose(sa[k], sb[k], rtol=2**-8, atol=1e-5), (k, (sa[k] - sb[k]).abs().max())
    wa, wb = _dit(tmp_path / "straight"), _dit(out)
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-2, rtol=0) for k in wa)
    worst = max(float((sa[k] - sb[k]).abs().max()) for k in trained)
    print(json.dumps({"processes": [before, after], "max_loss_diff": max(diffs), "max_state_diff": worst}))
