"""Faster generation: text keys/values reused across steps, int8 weights."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from tessera import checkpoint
from tessera.cli import main
from tessera.cli.generate import FAST_STEPS
from tessera.config import DiTConfig, model_config_from_dict
from tessera.export import probe
from tessera.models.dit import DiT
from tessera.models.quant import Int8Linear, quantize_int8, weight_bytes
from tessera.models.text import TextEmbedding
from tessera.pipeline import TesseraPipeline, guided_velocity
from tessera.safety.watermarker import Ledger
from tessera.schedulers import get_scheduler


def _random_dit(depth: int = 2) -> DiT:
    torch.manual_seed(0)
    dit = DiT(DiTConfig(in_channels=4, width=64, depth=depth, heads=2, text_dim=32)).eval()
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return dit


def _cond(b: int, seed: int, dim: int = 32) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, 6, dtype=torch.bool)
    mask[:, 4:] = False
    return {
        "text_tokens": torch.randn(b, 6, dim, generator=g),
        "text_mask": mask,
        "text_pooled": torch.randn(b, dim, generator=g),
    }


@pytest.mark.parametrize("autocast", [False, True])
def test_prepared_text_kv_gives_the_same_velocity(autocast):
    dit = _random_dit()
    z, t, cond = torch.randn(2, 4, 2, 4, 4), torch.tensor([0.3, 0.9]), _cond(2, 1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        kv = dit.prepare_text(cond["text_tokens"], cond["text_mask"])
        plain = dit(z, t, **cond)
        cached = dit(z, t, **cond, text_kv=kv)
        other = dit(z, t, **_cond(2, 2))
    assert len(kv.kv) == 2 and kv.kv[0][0].shape == (2, 2, 6, 32)  # (B, heads, L, head_dim)
    assert torch.equal(plain, cached)
    assert not torch.allclose(plain, other)  # the cache does carry the text


def _sample(dit, cond: dict, uncond: dict, guidance: float, reuse: bool, noise: torch.Tensor) -> torch.Tensor:
    c, u = (TextEmbedding(d["text_tokens"], d["text_mask"], d["text_pooled"]) for d in (cond, uncond))
    sched = get_scheduler("euler")
    sched.set_timesteps(6, 3.0)
    x = noise
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        velocity = guided_velocity(dit, c, u, guidance, reuse_text=reuse)
        for t in sched.timesteps:
            x = sched.step(velocity(x, t.expand(x.shape[0])), t, x)
    return x


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_guided_sampling_with_and_without_reuse_is_identical(guidance):
    dit = _random_dit()
    cond, uncond = _cond(2, 3), _cond(2, 4)
    noise = torch.randn(2, 4, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    runs = [_sample(dit, cond, uncond, guidance, reuse, noise) for reuse in (False, True)]
    assert torch.equal(runs[0], runs[1])


def test_int8_linear_is_its_dequantised_weight_and_close_to_the_original():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    q = Int8Linear.from_linear(lin)
    assert q.weight_int8.dtype == torch.int8 and q.scale.shape == (48,)
    # per-channel symmetric: every row uses the full int8 range, rounding error at most half a step
    assert (q.weight_int8.abs().amax(dim=1) == 127).all()
    assert ((q.dequantized() - lin.weight).abs() <= q.scale[:, None] / 2 + 1e-7).all()
    x = torch.randn(3, 5, 64)
    with torch.no_grad():
        exact = torch.nn.functional.linear(x, q.dequantized(), lin.bias)
        assert torch.allclose(q(x), exact, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = q(x)
        assert y.dtype == torch.bfloat16 and torch.allclose(y.float(), exact, atol=0.05, rtol=0.02)


def test_int8_dit_from_a_checkpoint_is_smaller_and_close(tiny_checkpoint):
    tensors, config, _ = checkpoint.load(tiny_checkpoint)
    cfg = model_config_from_dict(config)
    dit = DiT(cfg.dit).eval()
    dit.load_state_dict({k: v.float() for k, v in checkpoint.split_prefix(tensors, "dit").items()})
    with torch.no_grad():
        for p in dit.parameters():  # the tiny checkpoint's blocks are near zero; make them matter
            p.add_(torch.randn_like(p) * 0.05)
    z = torch.randn(2, cfg.dit.in_channels, 2, 4, 4)
    t = torch.tensor([0.2, 0.8])
    cond = _cond(2, 0, dim=cfg.dit.text_dim)
    with torch.no_grad():
        full = dit(z, t, **cond)
        before = weight_bytes(dit)
        quantize_int8(dit)
        small = dit(z, t, **cond)
    linears = [m for m in dit.modules() if isinstance(m, torch.nn.Linear)]
    assert {type(dit.x_embed), type(dit.final)} == {torch.nn.Linear} and len(linears) == 2
    assert isinstance(dit.blocks[0].attn.qkv, Int8Linear)
    assert weight_bytes(dit) < 0.4 * before
    rel = (small - full).norm() / full.norm()
    assert 0 < rel < 0.03, rel


def test_student_recipe_runs_end_to_end_and_learns_the_teacher(tiny_checkpoint, tmp_path):
    out = tmp_path / "student"
    cmd = [sys.executable, "-m", "tessera", "distill", "--teacher", str(tiny_checkpoint), "--out", str(out)]
    cmd += ["--pairs", "8", "--teacher-steps", "4", "--distill-steps", "60", "--distill-batch", "4"]
    cmd += ["--distill-lr", "3e-3", "--width", "128", "--height", "128", "--duration-s", "1"]
    # one thread: the tiny model's ops are too small to share, and on a busy machine threads only wait
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    # the student's 4-step sample without guidance moves towards the teacher's guided ODE result
    assert summary["few_step_mse_after"] < 0.7 * summary["few_step_mse_before"], summary
    assert summary["loss_last"] < summary["loss_first"]
    tensors, config, meta = checkpoint.load(summary["checkpoint"])
    assert meta["kind"] == "generator" and json.loads(meta["sampling"]) == {
        "scheduler": "euler",
        "steps": 4,
        "guidance": 1.0,
    }
    teacher, _, _ = checkpoint.load(tiny_checkpoint)
    assert all(torch.equal(tensors[k], teacher[k]) for k in teacher if k.startswith("vae."))  # the VAE is shared
    assert any(not torch.equal(tensors[k], teacher[k]) for k in teacher if k.startswith("dit."))
    # the shipping form: DiT in int8, the VAE read from the teacher's file beside it
    compact = out / "student-int8.safetensors"
    assert summary["compact"] == str(compact)
    shipped = tmp_path / "ship"
    shipped.mkdir()
    (shipped / tiny_checkpoint.name).write_bytes(tiny_checkpoint.read_bytes())
    (shipped / "s.safetensors").write_bytes(compact.read_bytes())
    from safetensors import safe_open

    with safe_open(str(shipped / "s.safetensors"), framework="pt") as f:
        assert not any(k.startswith("vae.") for k in f.keys())
        assert any(f.get_slice(k).get_dtype() == "I8" for k in f.keys())
    loaded, _, meta2 = checkpoint.load(shipped / "s.safetensors")
    assert meta2["sampling"] == meta["sampling"] and set(loaded) == set(tensors)
    assert all(torch.equal(loaded[k], teacher[k].float()) for k in teacher if k.startswith("vae."))
    for k in tensors:
        if k.startswith("dit.") and tensors[k].dim() == 2:
            w = tensors[k].float()
            assert (loaded[k] - w).abs().max() <= w.abs().amax(dim=1).max() / 127 * 0.51 + 1e-2 * w.abs().max(), k
    pipe = TesseraPipeline.from_single_file(shipped / "s.safetensors", ledger=Ledger(tmp_path / "l.sqlite3"))
    assert pipe.sampling == {"steps": 4, "guidance": 1.0}
    # without its base beside it (and not bundled), or beside another model's file: a clear error
    (shipped / tiny_checkpoint.name).unlink()
    with pytest.raises(checkpoint.CheckpointError, match="not beside it"):
        checkpoint.load(shipped / "s.safetensors")
    other = dict(teacher)
    other["vae.extra_marker"] = torch.zeros(1)
    checkpoint.save(shipped / tiny_checkpoint.name, other, {}, kind="generator")
    with pytest.raises(checkpoint.CheckpointError, match="not the checkpoint"):
        checkpoint.load(shipped / "s.safetensors")


def test_reflow_recipe_still_learns_the_teacher(tiny_checkpoint, tmp_path):
    out = tmp_path / "reflow"
    cmd = [sys.executable, "-m", "tessera", "distill", "--teacher", str(tiny_checkpoint), "--out", str(out)]
    cmd += ["--method", "reflow", "--pairs", "8", "--teacher-steps", "4", "--distill-steps", "60"]
    cmd += ["--distill-batch", "4", "--distill-lr", "3e-3", "--width", "128", "--height", "128", "--duration-s", "1"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["few_step_mse_after"] < 0.7 * summary["few_step_mse_before"], summary
    assert "student step 50/60" in run.stderr  # progress on stderr, the summary alone on stdout


def test_student_recipe_resumes_after_a_kill_with_the_same_result(tiny_checkpoint, tmp_path):
    """Pairs and training state are saved as they are made; a re-run after kill -9 ends where an unbroken run ends."""
    import signal
    import time

    def cmd(out):
        c = [sys.executable, "-m", "tessera", "distill", "--teacher", str(tiny_checkpoint), "--out", str(out)]
        c += ["--pairs", "8", "--teacher-steps", "4", "--distill-steps", "40", "--distill-batch", "4"]
        return c + ["--save-every", "5", "--width", "128", "--height", "128", "--duration-s", "1"]

    env = dict(os.environ, OMP_NUM_THREADS="1")
    whole = subprocess.run(cmd(tmp_path / "a"), capture_output=True, text=True, timeout=600, env=env)
    assert whole.returncode == 0, whole.stderr[-2000:]
    proc = subprocess.Popen(cmd(tmp_path / "b"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    state = tmp_path / "b" / "state.safetensors"
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and not (tmp_path / "b" / "student.safetensors").exists()
    again = subprocess.run(cmd(tmp_path / "b"), capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    a, _, _ = checkpoint.load(tmp_path / "a" / "student.safetensors")
    b, _, _ = checkpoint.load(tmp_path / "b" / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the folder holds this run: another seed is refused, naming it, before any teacher path is made
    other = subprocess.run(cmd(tmp_path / "b") + ["--seed", "1"], capture_output=True, text=True, env=env)
    assert other.returncode == 2 and "seed 0 -> 1" in other.stderr and "teacher paths" not in other.stderr
    # a damaged file of teacher paths is made again, to the same student
    (tmp_path / "b" / "pairs" / "pairs-000000.safetensors").write_bytes(b"\x00" * 64)
    (tmp_path / "b" / "student.safetensors").unlink()
    again = subprocess.run(cmd(tmp_path / "b"), capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and "teacher paths made again" in again.stderr, again.stderr[-2000:]
    b, _, _ = checkpoint.load(tmp_path / "b" / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_student_recipe_rejects_bad_input(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "tessera", "distill", "--out", str(tmp_path), "--student-steps", "20"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "--student-steps 20" in run.stderr and "Traceback" not in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "tessera", "distill", "--out", str(tmp_path), "--device", "gpu"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "--device 'gpu'" in run.stderr and "Traceback" not in run.stderr


def test_a_student_checkpoint_brings_its_own_sampling(tiny_checkpoint, tmp_path):
    tensors, config, meta = checkpoint.load(tiny_checkpoint)
    sampling = {"scheduler": "euler", "steps": 3, "guidance": 1.0}
    path = tmp_path / "student.safetensors"
    checkpoint.save(path, tensors, config, **{**meta, "sampling": json.dumps(sampling)})
    calls = []
    pipe = TesseraPipeline.from_single_file(path, ledger=Ledger(str(tmp_path / "ledger.jsonl")))
    pipe(
        "a red circle", width=128, height=128, duration_s=1, output_type="latent", callback=lambda i, n: calls.append(n)
    )
    assert calls == [3, 3, 3] and pipe.sampling == {"steps": 3, "guidance": 1.0}
    assert pipe.check_request("a red circle", num_inference_steps=7).steps == 7  # a call still overrides
    teacher = TesseraPipeline.from_single_file(tiny_checkpoint, ledger=Ledger(str(tmp_path / "ledger.jsonl")))
    assert teacher.check_request("a red circle").steps == 25 and teacher.check_request("x").guidance == 4.0


def test_cli_generate_int8_and_fast(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    out = tmp_path / "v.mp4"
    args = ["generate", "a red circle", "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--int8", "--fast"]
    assert main([*args, "--width", "128", "--height", "128", "--duration-s", "1"]) == 0
    captured = capsys.readouterr()
    assert f"{FAST_STEPS} steps" in captured.err  # no student for this checkpoint: the solver at fewer steps
    assert probe(out)["frames"] == 9


def test_trajectory_targets_land_on_the_teachers_states():
    """On straight teacher paths into x0 = 0 (S_k = t_k · noise) the exact velocity is x / t: its loss is zero,
    from the teacher's states and from the student's own previous step alike; any other velocity costs."""
    from tessera.distill import StudentConfig, trajectory_batch
    from tessera.schedulers import time_grid

    sc = StudentConfig(pairs=6, student_steps=4, batch=16, own_states=0.5)
    grid = time_grid(4, 3.0)  # (5,) 1 -> 0
    noise = torch.randn(6, 2, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    inner = torch.stack([noise * t for t in grid[1:-1]], dim=1)  # (6, 3, ...) the states at the inner call times
    pairs = {"noise": noise, "x0": torch.zeros_like(noise), "inner": inner}
    cond = {"text_tokens": torch.zeros(16, 1, 1)}

    def exact(x, t, text_tokens):
        assert x.shape[0] == text_tokens.shape[0] == t.shape[0]
        return x / t.view(-1, 1, 1, 1, 1)

    for seed in range(4):
        _, loss = trajectory_batch(pairs, grid, sc, torch.Generator().manual_seed(seed))
        assert loss(exact, cond).item() < 1e-10
        assert loss(lambda x, t, text_tokens: 1.1 * exact(x, t, text_tokens), cond).item() > 1e-3


def test_teacher_paths_keep_the_states_at_the_students_call_times(tiny_checkpoint):
    from tessera.distill import StudentConfig, latent_shape, sampling_shift, teacher_pairs
    from tessera.models.text import TextEncoder

    tensors, config, _ = checkpoint.load(tiny_checkpoint)
    cfg = model_config_from_dict(config)
    teacher = DiT(cfg.dit)
    teacher.load_state_dict({k: v.float() for k, v in checkpoint.split_prefix(tensors, "dit").items()})
    teacher.eval()
    text = TextEncoder(cfg.text)
    sc = StudentConfig(
        pairs=2, batch=2, teacher_scheduler="euler", teacher_steps=4, student_steps=2, guidance=1.0,
        height_px=128, width_px=128, duration_s=1.0,
    )  # fmt: skip
    pairs, prompts = teacher_pairs(teacher, text, cfg, sc)
    assert pairs["inner"].shape == (2, 1, *pairs["noise"].shape[1:])
    # the same Euler run, stopped after 2 of its 4 steps: the student's call time t_1
    sched = get_scheduler("euler")
    sched.set_timesteps(4, sampling_shift(cfg, latent_shape(cfg, sc)))
    velocity = guided_velocity(teacher, text(prompts), text(prompts), 1.0)
    x, states = pairs["noise"], []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for t in sched.timesteps:
            x = sched.step(velocity(x, t.expand(2)), t, x)
            states.append(x.float())
    dist = [(s - pairs["inner"][:, 0]).abs().max().item() for s in states]
    assert dist[1] < 2e-3 and min(dist[0], dist[2]) > 20 * dist[1], dist  # equal up to bf16 batching noise
    assert torch.allclose(states[-1], pairs["x0"], atol=2e-3)
    with pytest.raises(ValueError, match="not a multiple"):
        teacher_pairs(teacher, text, cfg, dataclasses.replace(sc, teacher_steps=6, student_steps=4))
    with pytest.raises(ValueError, match="one call per step"):
        teacher_pairs(teacher, text, cfg, dataclasses.replace(sc, teacher_scheduler="heun"))


def test_the_bundled_student_is_what_fast_uses_and_shares_the_bundled_vae(tmp_path):
    import argparse

    from tessera.cli.generate import apply_fast
    from tessera.pipeline import bundled_student

    args = argparse.Namespace(checkpoint=None, scheduler=None, steps=None)
    apply_fast(args)
    assert args.checkpoint == str(bundled_student())
    student = TesseraPipeline.from_single_file(bundled_student(), ledger=Ledger(tmp_path / "l.sqlite3"))
    teacher = TesseraPipeline.from_single_file(ledger=Ledger(tmp_path / "l.sqlite3"))
    assert student.sampling == {"steps": 4, "guidance": 1.0} and type(student.scheduler).__name__.endswith(
        "Euler" + "Scheduler"
    )
    for k, v in teacher.vae.state_dict().items():
        assert torch.equal(v, student.vae.state_dict()[k]), k
    assert student.model_hash != teacher.model_hash  # the ledger tells the two models apart
    out = student("a red circle moving left on a black background", seed=0)
    assert out.frames.shape == (17, 256, 256, 3) and out.frames.std() > 5


def test_without_init_skips_initialisation_in_its_thread_only():
    import threading

    from tessera.models import without_init

    t = torch.zeros(4, 4)
    seen = {}

    def other():
        u = torch.zeros(4, 4)
        torch.nn.init.normal_(u)
        seen["other"] = bool(u.abs().sum() > 0)

    with without_init():
        torch.nn.init.normal_(t)
        torch.nn.init.kaiming_uniform_(t)
        assert torch.equal(t, torch.zeros(4, 4))
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert seen["other"]  # another thread building a module meanwhile is initialised as usual
    torch.nn.init.normal_(t)
    assert t.abs().sum() > 0  # and so is this one, after the block
    assert torch.nn.init.normal_.__module__ == "torch.nn.init"  # the originals are back
