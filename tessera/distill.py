"""A few-step student distilled from a teacher, guidance included: trajectory matching or reflow.

Recipe (`method`):

1. *Teacher paths.* For prompts of the shapes-world grammar (seen combinations only, so
   the held-out ones stay held out), draw noise and run the teacher's ODE with
   classifier-free guidance (`teacher_scheduler`, `teacher_steps`, `guidance`) to a latent
   x0. The teacher's grid is the student's grid with every interval cut into
   `teacher_steps / student_steps` steps, so its states at the student's call times are
   kept too: a path noise = S_0, S_1, ..., S_K = x0 for a K-step student.
2. *Training*, starting from the teacher's weights, conditioned on the prompt only (the
   student needs no guidance at sampling time):
   - `trajectory` (default; Luhman & Luhman 2021 and the multi-step "piecewise" students of
     LCM / Hyper-SD / TDD, here as a direct regression): at call time t_k the student sees
     the teacher's state S_k and learns the velocity whose Euler step lands on S_{k+1}. For
     a share of the samples (`own_states`) the input is the student's own Euler step from
     S_{k-1} instead, and the target leads from there back to S_{k+1}, so it learns to
     correct its own errors rather than meeting them for the first time when it samples.
     The loss is measured where it matters, in the state after the step (weight Δt²).
   - `reflow` (Liu et al. 2022, "Flow Straight and Fast"; InstaFlow): the flow loss on the
     straight line between noise and x0 (half of the times on the student's grid); the
     deterministic coupling gives a straighter flow, which Euler follows in a few steps.
3. *Save.* A generation checkpoint (the teacher's VAE + the student's EMA DiT) whose
   metadata says how to sample it (`sampling`: Euler, K steps, guidance 1), and its
   shipping form (`pack_student`): the DiT in int8 beside the teacher's file for the VAE.

Steps 1 and 2 write as they go (`OUT/pairs/`, `OUT/state.safetensors`): a stopped run,
re-run with the same command, resumes and ends where an unbroken run would have. `OUT/run.json`
records the teacher (SHA-256) and settings; a re-run with others is refused (`tessera.run_folder`),
more --distill-steps continue the run.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tessera import checkpoint
from tessera.config import MAX_GUIDANCE, MAX_SEED, MAX_STEPS, MAX_VIDEO_S, ModelConfig, model_config_from_dict
from tessera.data.world import BACKGROUNDS, all_combos, held_out_combos, simple_prompt
from tessera.diffusion.flow import flow_loss, shift_for
from tessera.errors import InputError
from tessera.models.dit import DiT
from tessera.models.quant import KEEP_FULL_PRECISION
from tessera.models.text import TextEncoder
from tessera.pipeline import default_device, guided_velocity
from tessera.run_folder import claim
from tessera.safety.ledger import file_sha256
from tessera.schedulers import get_scheduler, time_grid

log = logging.getLogger(__name__)


@dataclass
class StudentConfig:
    """What `tessera distill` runs; sizes in pixels, duration in seconds."""

    pairs: int = 1024  # teacher paths (noise, states at the student's times, latent)
    method: str = "trajectory"  # or "reflow" (see the module docstring)
    own_states: float = 0.5  # trajectory: share of samples (k >= 1) that start from the student's own step
    teacher_scheduler: str = "dpm++2m"
    teacher_steps: int = 12
    guidance: float = 4.0
    steps: int = 2000  # student training steps
    batch: int = 8
    lr: float = 5e-5
    student_steps: int = 4  # Euler steps the student samples with
    ema: float = 0.998  # the student ships the EMA of its weights
    save_every: int = 100  # training steps between resumable states
    height_px: int = 256
    width_px: int = 256
    duration_s: float = 2.0
    seed: int = 0

    def __post_init__(self):
        check_settings(
            self, STUDENT_FLAGS, counts=("pairs", "steps", "batch", "save_every"), shares=("own_states", "ema"),
            choices={"method": ("trajectory", "reflow")},
        )  # fmt: skip
        if not 1 <= self.student_steps <= 8:
            raise InputError(
                f"--student-steps {self.student_steps} is outside 1..8; a few-step student samples in 1 to 8 steps"
            )
        if not 1 <= self.teacher_steps <= MAX_STEPS:
            raise InputError(f"--teacher-steps {self.teacher_steps} is outside 1..{MAX_STEPS}; 12 is the default")


STUDENT_FLAGS = {"steps": "--distill-steps", "batch": "--distill-batch", "lr": "--distill-lr"}  # CLI spellings


def _flag(field: str, flags: dict[str, str]) -> str:
    return flags.get(field, {"height_px": "--height", "width_px": "--width"}.get(field, "--" + field.replace("_", "-")))


def check_settings(c, flags: dict[str, str], counts=(), shares=(), choices=None) -> None:
    """InputError unless a recipe config's (StudentConfig, PreferenceConfig) settings can run, naming the CLI flag.

    Both: seed in 0..2^64-1; sides multiples of 32 (VAE 16 x patch 2) within the pipeline's limits;
    duration, guidance and lr finite and positive (the model's own window is checked at load,
    `latent_shape`); `counts` at least 1; `shares` in [0, 1]; `choices` one of theirs.
    """
    from tessera.geometry import MAX_SIDE_PX, MIN_SIDE_PX

    def number(field: str, lo: float, hi: float, hint: str = "") -> None:
        v = getattr(c, field)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and lo < v <= hi):
            raise InputError(f"{_flag(field, flags)} {v!r} must be a finite number in ({lo:g}, {hi:g}]{hint}")

    if isinstance(c.seed, bool) or not isinstance(c.seed, int) or not 0 <= c.seed <= MAX_SEED:
        raise InputError(f"{_flag('seed', flags)} {c.seed!r} is outside 0..2^64-1; seeds are 64-bit")
    for field in ("height_px", "width_px"):
        v = getattr(c, field)
        if isinstance(v, bool) or not isinstance(v, int) or v % 32 or not MIN_SIDE_PX <= v <= MAX_SIDE_PX:
            near = 32 * round(v / 32) if isinstance(v, (int, float)) and math.isfinite(v) else 256
            near = min(max(near, MIN_SIDE_PX), MAX_SIDE_PX)
            raise InputError(
                f"{_flag(field, flags)} {v!r} must be a multiple of 32 (VAE 16 x patch 2) in "
                f"{MIN_SIDE_PX}..{MAX_SIDE_PX} px; try {near}"
            )
    number("duration_s", 0.0, MAX_VIDEO_S, "; one clip is at most the model's window (4 s for the bundled model)")
    number("guidance", 0.0, MAX_GUIDANCE, "; 4 is the default, 1 turns guidance off")
    number("lr", 0.0, 1.0)
    for field in counts:
        v = getattr(c, field)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{_flag(field, flags)} {v!r} must be a whole number of at least 1")
    for field in shares:
        v = getattr(c, field)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise InputError(f"{_flag(field, flags)} {v!r} is a share, between 0 and 1")
    for field, allowed in (choices or {}).items():
        if getattr(c, field) not in allowed:
            raise InputError(f"{_flag(field, flags)} {getattr(c, field)!r} is not one of {', '.join(allowed)}")


def student_prompts(n: int, seed: int) -> list[str]:
    """`n` grammar prompts of seen (colour, shape, motion) combinations with random backgrounds."""
    held = held_out_combos()
    seen = [c for c in all_combos() if c not in held]
    rng = np.random.default_rng(seed)
    bgs = list(BACKGROUNDS)
    return [simple_prompt(*seen[rng.integers(len(seen))], bgs[rng.integers(len(bgs))]) for _ in range(n)]


def latent_shape(cfg: ModelConfig, sc: StudentConfig) -> tuple[int, int, int, int]:
    """(C, T', H', W') of the latent of a clip of the configured size."""
    if sc.duration_s > cfg.max_duration_s:
        raise InputError(
            f"--duration-s {sc.duration_s:g}: the model makes clips of up to {cfg.max_duration_s:g} s in one "
            f"window; pass --duration-s {cfg.max_duration_s:g} or less"
        )
    v = cfg.vae
    frames = 1 + max(1, round((sc.duration_s * cfg.fps - 1) / v.temporal_factor)) * v.temporal_factor
    return (
        v.latent_channels,
        1 + (frames - 1) // v.temporal_factor,
        sc.height_px // v.spatial_factor,
        sc.width_px // v.spatial_factor,
    )


def sampling_shift(cfg: ModelConfig, shape: tuple[int, int, int, int]) -> float:
    d = cfg.dit
    tokens = (shape[1] // d.patch_t) * (shape[2] // d.patch_hw) * (shape[3] // d.patch_hw)
    return shift_for(cfg.timestep_shift, tokens, cfg.shift_ref_tokens)


@torch.no_grad()
def teacher_pairs(
    teacher: DiT, text: TextEncoder, cfg: ModelConfig, sc: StudentConfig, folder: Path | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """({noise, x0} each (P, C, T', H', W'), inner (P, K - 1, C, T', H', W')), prompts.

    noise and the teacher's guided sample x0 from it, and the teacher's states at the K-step
    student's inner call times (K = `student_steps`); prompt i belongs to pair i.

    The teacher runs on its device; noise is drawn and pairs kept on the CPU. With `folder`, each
    batch of pairs is written there as it is made (`pairs-{start:06d}.safetensors`) and read back
    on a re-run, so a stopped run resumes where it was. The noise of a batch depends only on the
    seed and its start index, so resumed pairs equal uninterrupted ones.
    """
    prompts = student_prompts(sc.pairs, sc.seed)
    shape = latent_shape(cfg, sc)
    shift = sampling_shift(cfg, shape)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    k_steps, every = sc.student_steps, teacher_substeps(sc)
    device = next(teacher.parameters()).device
    noise = torch.empty((sc.pairs, *shape))
    x0 = torch.empty_like(noise)
    inner = torch.empty((sc.pairs, k_steps - 1, *shape))
    for i in range(0, sc.pairs, sc.batch):
        n = min(sc.batch, sc.pairs - i)
        path = None if folder is None else folder / f"pairs-{i:06d}.safetensors"
        if path is not None and path.is_file():
            try:
                saved, _, _ = checkpoint.load(path)
            except checkpoint.CheckpointError as e:  # cut short or damaged: made again
                log.warning("teacher paths made again: %s", e)
                saved = {"noise": noise[:0]}
            if saved["noise"].shape == (n, *shape) and saved.get("inner", noise[:0]).shape == (n, k_steps - 1, *shape):
                noise[i : i + n], x0[i : i + n], inner[i : i + n] = saved["noise"], saved["x0"], saved["inner"]
                continue
        g = torch.Generator().manual_seed(sc.seed * 1_000_003 + i)
        noise[i : i + n] = torch.randn((n, *shape), generator=g)
        cond = text(prompts[i : i + n]).to(device)
        uncond = text([""] * n).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            velocity = guided_velocity(teacher, cond, uncond, sc.guidance)
            sched = get_scheduler(sc.teacher_scheduler)
            sched.set_timesteps(sc.teacher_steps, shift)
            if len(sched.timesteps) != sc.teacher_steps:
                raise ValueError(
                    f"teacher scheduler {sc.teacher_scheduler!r} calls the model {len(sched.timesteps)} times in "
                    f"{sc.teacher_steps} steps; the student's states need one call per step (euler, dpm++2m)"
                )
            x = noise[i : i + n].to(device)
            for j, t in enumerate(sched.timesteps):
                x = sched.step(velocity(x, t.expand(x.shape[0]).to(x.device)), t, x)
                if (j + 1) % every == 0 and (j + 1) // every < k_steps:  # at the student's call time t_{(j+1)/every}
                    inner[i : i + n, (j + 1) // every - 1] = x.float().cpu()
        x0[i : i + n] = x.float().cpu()
        if path is not None:
            part = {"noise": noise[i : i + n], "x0": x0[i : i + n], "inner": inner[i : i + n]}
            checkpoint.save(path, part, {}, kind="distill_pairs")
        log.info("teacher paths %d/%d", i + n, sc.pairs)
    return {"noise": noise, "x0": x0, "inner": inner}, prompts


def teacher_substeps(sc: StudentConfig) -> int:
    """Teacher steps per student step: the teacher's grid holds the student's call times."""
    if sc.teacher_steps % sc.student_steps:
        raise ValueError(
            f"teacher steps {sc.teacher_steps} are not a multiple of the student's {sc.student_steps}; "
            f"try {sc.student_steps * max(1, round(sc.teacher_steps / sc.student_steps))}"
        )
    return sc.teacher_steps // sc.student_steps


@torch.no_grad()
def student_error(
    dit: DiT, pairs: dict, prompts: list[str], text: TextEncoder, cfg: ModelConfig, sc: StudentConfig
) -> float:
    """Mean squared distance between `dit`'s few-step Euler sample (no guidance) and the teacher's latent, over ≤ 64 pairs."""
    n = min(64, len(prompts))
    shift = sampling_shift(cfg, tuple(pairs["noise"].shape[1:]))
    device = next(dit.parameters()).device
    err = 0.0
    for i in range(0, n, sc.batch):
        cond = text(prompts[i : min(i + sc.batch, n)]).to(device)
        x = pairs["noise"][i : i + len(cond.tokens)].to(device)
        sched = get_scheduler("euler")
        sched.set_timesteps(sc.student_steps, shift)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            velocity = guided_velocity(dit, cond, cond, 1.0)
            for t in sched.timesteps:
                x = sched.step(velocity(x, t.expand(x.shape[0]).to(x.device)), t, x)
        err += (x.float().cpu() - pairs["x0"][i : i + len(x)]).pow(2).mean(dim=(1, 2, 3, 4)).sum().item()
    return err / n


def reflow_batch(pairs: dict, grid: torch.Tensor, sc: StudentConfig, g: torch.Generator):
    """One reflow batch: rows, and a loss function of the student (x_t on the straight line noise -> x0)."""
    rows = torch.randint(0, len(pairs["x0"]), (sc.batch,), generator=g)
    on_grid = grid.cpu()[torch.randint(0, len(grid) - 1, (sc.batch,), generator=g)]
    t = torch.where(torch.rand(sc.batch, generator=g) < 0.5, on_grid, torch.rand(sc.batch, generator=g))
    t = t.to(grid.device)

    def loss(student, cond: dict) -> torch.Tensor:
        return flow_loss(student, pairs["x0"][rows], cond, t.clamp(1e-3, 1.0), pairs["noise"][rows])

    return rows, loss


def trajectory_batch(pairs: dict, grid: torch.Tensor, sc: StudentConfig, g: torch.Generator):
    """One trajectory-matching batch: rows, and a loss function of the student.

    Sample i is at call k (time grid[k]) in the teacher's state S_k, or, with probability
    `own_states` when k >= 1, in the student's own Euler step from S_{k-1}; its target is the
    velocity whose Euler step lands on S_{k+1}. Loss: squared error of the next state, i.e. of
    the velocity times Δt_k, normalised by the mean Δt² so its scale matches the flow loss.
    """
    rows = torch.randint(0, len(pairs["x0"]), (sc.batch,), generator=g)
    k = torch.randint(0, len(grid) - 1, (sc.batch,), generator=g)
    own = (torch.rand(sc.batch, generator=g) < sc.own_states) & (k >= 1)
    last = len(grid) - 1

    def states(r: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """(B, C, T', H', W') the teacher's state S_at[b] of path r[b] (S_0 noise, S_K the latent)."""
        pick = [
            pairs["noise"][i] if j == 0 else pairs["x0"][i] if j == last else pairs["inner"][i, j - 1]
            for i, j in zip(r.tolist(), at.tolist())
        ]
        return torch.stack(pick)

    dt = grid[1:] - grid[:-1]  # (K,) negative: time runs from 1 to 0
    weight = dt**2 / (dt**2).mean()

    def loss(student, cond: dict) -> torch.Tensor:
        x = states(rows, k)  # (B, C, T', H', W') S_k
        if own.any():  # the student's step from S_{k-1}, without gradient
            i = own.nonzero().squeeze(1)
            prev = states(rows[i], k[i] - 1)
            with torch.no_grad():
                v_prev = student(prev, grid[k[i] - 1], **{n: c[i] for n, c in cond.items()})
            x[i] = prev + dt[k[i] - 1].view(-1, 1, 1, 1, 1) * v_prev.float()
        target = (states(rows, k + 1) - x) / dt[k].view(-1, 1, 1, 1, 1)
        pred = student(x, grid[k], **cond)
        err = (pred.float() - target).pow(2).mean(dim=(1, 2, 3, 4))  # (B,)
        return (err * weight[k]).mean()

    return rows, loss


BATCHES = {"trajectory": trajectory_batch, "reflow": reflow_batch}


def train_dit(
    teacher: DiT,
    pairs: dict,
    prompts: list[str],
    text: TextEncoder,
    cfg: ModelConfig,
    sc: StudentConfig,
    state_path: Path | None = None,
):
    """Train a copy of the teacher with `sc.method`'s batches; returns (student EMA, losses).

    Trains on the teacher's device, with the pairs moved there; batches are drawn on the CPU, so
    their order does not depend on the device. With `state_path`, weights, EMA, optimiser and
    random state are saved every `sc.save_every` steps (`tessera.training.state`), and a re-run
    resumes from the last save.
    """
    from tessera.training.state import TrainState

    if sc.method not in BATCHES:
        raise ValueError(f"distillation method {sc.method!r} is unknown; choose one of {', '.join(BATCHES)}")
    make_batch = BATCHES[sc.method]
    device = next(teacher.parameters()).device
    pairs = {k: v.to(device) for k, v in pairs.items()}
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    opt = torch.optim.AdamW(student.parameters(), lr=sc.lr, weight_decay=0.0)
    ema = [p.detach().clone() for p in student.parameters()]
    grid = time_grid(sc.student_steps, sampling_shift(cfg, tuple(pairs["noise"].shape[1:]))).to(device)  # (K + 1,)
    e = text(prompts).to(device)
    g = torch.Generator().manual_seed(sc.seed + 1)
    state = TrainState(state_path) if state_path is not None else None
    start = state.load(student, opt, ema) if state is not None else 0
    if start:
        g.set_state(state.tensors["rng.distill"])
    losses = [float(v) for v in state.tensors.get("losses", torch.empty(0)).tolist()] if start else []
    for step in range(start, sc.steps):
        rows, batch_loss = make_batch(pairs, grid, sc, g)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = batch_loss(student, e[rows.to(device)].as_kwargs())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(sc.ema, (1 + step) / (10 + step))  # the usual warm-up, so short runs move too
            torch._foreach_lerp_(ema, [p.detach() for p in student.parameters()], 1 - decay)
        losses.append(loss.item())
        if step % 50 == 0:
            log.info("student step %d/%d loss %.4f", step, sc.steps, loss.item())
        if state is not None and ((step + 1) % sc.save_every == 0 or step + 1 == sc.steps):
            extra = {"rng.distill": g.get_state(), "losses": torch.tensor(losses)}
            state.save(step + 1, student, opt, asdict(sc), ema=ema, extra=extra)
    with torch.no_grad():
        for p, a in zip(student.parameters(), ema):
            p.copy_(a)
    return student.eval().requires_grad_(False), losses


def load_frozen_dit(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict[str, str], ModelConfig, DiT]:
    """A generation checkpoint for a recipe that trains from it: (tensors, config dict, metadata, config, its DiT
    in fp32, eval mode, no gradients). CheckpointError when the file is not a generation checkpoint."""
    tensors, config, meta = checkpoint.load(path)
    if meta.get("kind") != "generator":
        raise checkpoint.CheckpointError(f"{path} is not a generation checkpoint (kind {meta.get('kind')!r})")
    cfg = model_config_from_dict(config)
    dit = DiT(cfg.dit)
    dit.load_state_dict({k: v.float() for k, v in checkpoint.split_prefix(tensors, "dit").items()})
    return tensors, config, meta, cfg, dit.eval().requires_grad_(False)


def save_with_dit(path: Path, base: dict[str, torch.Tensor], dit: DiT, config: dict, meta: dict[str, str]) -> None:
    """A generation checkpoint: every tensor of `base` but its DiT's (the VAE, unchanged), `dit` in bf16, `meta`."""
    kept = {k: v for k, v in base.items() if not k.startswith("dit.")}
    trained = {f"dit.{k}": v.detach().to("cpu", torch.bfloat16) for k, v in dit.state_dict().items()}
    checkpoint.save(path, {**kept, **trained}, config, **meta)


def train_student(teacher_path: str | Path, out: str | Path, sc: StudentConfig, device: str | None = None) -> dict:
    """The whole recipe: teacher checkpoint -> paths -> training -> `out/student.safetensors`; returns a summary.

    device: where the models run; default a GPU when there is one, else the CPU.
    """
    device = torch.device(device) if device else default_device()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors, config, meta, cfg, teacher = load_frozen_dit(teacher_path)
    claim(out, "run.json", {**asdict(sc), "teacher_sha256": file_sha256(teacher_path)}, free=("steps", "save_every"))
    teacher = teacher.to(device)
    text = TextEncoder(cfg.text, device=device)
    torch.manual_seed(sc.seed)
    pairs, prompts = teacher_pairs(teacher, text, cfg, sc, folder=out / "pairs")
    before = student_error(teacher, pairs, prompts, text, cfg, sc)
    student, losses = train_dit(teacher, pairs, prompts, text, cfg, sc, state_path=out / "state.safetensors")
    after = student_error(student, pairs, prompts, text, cfg, sc)
    sampling = {"scheduler": "euler", "steps": sc.student_steps, "guidance": 1.0}
    name = f"{meta.get('name', Path(teacher_path).stem)}-student{sc.student_steps}"
    path = out / "student.safetensors"
    extra = {"sampling": json.dumps(sampling), "recipe": json.dumps(asdict(sc)), "teacher": Path(teacher_path).name}
    save_with_dit(path, tensors, student, config, {**meta, "name": name, **extra})  # the teacher's VAE, unchanged
    k = max(1, len(losses) // 10)
    summary = {
        "checkpoint": str(path),
        "sampling": sampling,
        "loss_first": float(np.mean(losses[:k])),
        "loss_last": float(np.mean(losses[-k:])),
        "few_step_mse_before": before,  # teacher DiT sampled like the student (Euler, no guidance) vs its guided ODE
        "few_step_mse_after": after,
    }
    summary["compact"] = str(pack_student(path, teacher_path, out / "student-int8.safetensors"))
    (out / "student.json").write_text(json.dumps({"config": asdict(sc), **summary}, indent=2))
    return summary


def pack_student(student_path: str | Path, teacher_path: str | Path, out_path: str | Path) -> Path:
    """The shipping form of a student: its DiT in int8, the VAE read from the teacher's file (see checkpoint.py).

    `out_path` loads wherever the teacher's file lies beside it, or is the bundled model.
    The first and last DiT layers stay in bf16 (as `tessera.models.quant` keeps them).
    """
    tensors, config, meta = checkpoint.load(student_path)
    meta = {k: v for k, v in meta.items() if k not in ("shared_from", "shared_sha256", "weights")}
    keep = tuple(f"dit.{name}." for name in KEEP_FULL_PRECISION)
    checkpoint.save_beside(out_path, tensors, config, teacher_path, int8_keep=keep, **meta)
    return Path(out_path)
