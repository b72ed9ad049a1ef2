"""The DiT stage: flow matching on cached VAE latents, in one process or N under torchrun (FSDP).

    final = DiTTrainer(Path("runs/small/dit"), PRESETS["small"], vae_path, DiTTrainConfig()).train()

The trainer is built from small parts, one per named step of `train()`:

    data        DiTData: latents and texts, loaded once; the global batch of step k from (seed, k) alone
    model       DiT (FSDP-sharded under torchrun), its EMA and AdamW
    step        DiTTrainer.step: this rank's slice of the batch, in micro-batches, then AdamW and EMA
    checkpoint  TrainState (tessera.training.state) and the generation checkpoint, from the EMA
    eval        a quick adherence check of the EMA weights (tessera.eval)

Every rank draws the same global batch and trains on its 1/N slice of it, so the run does
not depend on N, and a state saved by N processes resumes with any other number.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from tessera import checkpoint
from tessera import distributed as D
from tessera.conditioning import MaskConfig, sample_levels
from tessera.config import ModelConfig

# every import from tessera.data in this module:
from tessera.data.buckets import Bucket, BucketConfig, BucketSampler, LatentGroup
from tessera.data.shards import SHARD_GLOB, load_latent_groups
from tessera.data.world import WorldConfig, build_latent_cache
from tessera.diffusion.flow import flow_loss, sample_train_times, shift_for
from tessera.errors import InputError
from tessera.flops import dit_train_flops, matmul_peak_flops
from tessera.models.autoencoder import load_video_vae
from tessera.models.dit import DiT
from tessera.models.text import TextEmbedding, TextEncoder
from tessera.models.vae import VideoVAE
from tessera.training.config import TIMING_FROM, TIMING_STEPS, DiTTrainConfig, check_dit_train, latent_lengths
from tessera.training.generator import save_generator
from tessera.training.logs import MetricsLog, Throughput, peak_memory_mb
from tessera.training.schedule import fit_steps, lr_at
from tessera.training.state import TrainState

log = logging.getLogger(__name__)
MAX_BATCH_FACTOR = 8  # a bucket's batch is at most this many times `batch` (short, small clips)
EVAL_BATCH = 8  # prompts generated together in a quick adherence check


# ----------------------------------------------------------------------------- data


class TextTable:
    """Every training text encoded once: row i of tokens/mask/pooled is text i; row 0 is the empty prompt."""

    def __init__(self, encoder, texts: list[str]):
        self.texts = [""] + sorted(set(texts) - {""})
        self.index = {t: i for i, t in enumerate(self.texts)}
        e = encoder(self.texts)
        self.tokens, self.mask, self.pooled = e.tokens.to(torch.bfloat16), e.mask, e.pooled  # (N, L, D), (N, L), (N, D)

    def cond(self, rows: torch.Tensor, device: torch.device | str = "cpu") -> dict:
        """The DiT's text keyword arguments for these rows (spelled once, in TextEmbedding)."""
        return TextEmbedding(self.tokens[rows].float(), self.mask[rows], self.pooled[rows]).to(device).as_kwargs()


def world_latents(vae: VideoVAE, out: Path, cfg: DiTTrainConfig, device: torch.device | str = "cpu") -> Path:
    """Encode the shapes-world clips once (split over `cfg.shapes`); returns the cache folder.

    Rendering runs on every core; encoding on `device` (a GPU encodes in bigger batches).
    """
    world = WorldConfig(seed=cfg.seed, wording=cfg.wording, two_object_fraction=cfg.two_objects)
    shapes = cfg.shapes or ((cfg.height_px, cfg.width_px),)
    on_gpu = torch.device(device).type == "cuda"
    opts = dict(device=device, workers=os.cpu_count() or 1, batch=32 if on_gpu else 8)
    root = out / "latents"
    folders = {f"{h}x{w}" for h, w in shapes} if len(shapes) > 1 else set()
    for stale in sorted(root.glob("*x*")):  # an earlier run's shapes: everything under root is trained on
        if stale.is_dir() and re.fullmatch(r"\d+x\d+", stale.name) and stale.name not in folders:
            log.info("removing %s: not one of this run's shapes", stale)
            shutil.rmtree(stale)
    if len(shapes) == 1:
        build_latent_cache(vae, root, cfg.clips, cfg.frames, *shapes[0], world, **opts)
        return root
    for stale in sorted(root.glob(SHARD_GLOB)):  # an earlier one-shape run's shards
        log.info("removing %s: this run has %d shapes", stale, len(shapes))
        stale.unlink()
    per = cfg.clips // len(shapes)
    for i, (h, w) in enumerate(shapes):
        build_latent_cache(vae, root / f"{h}x{w}", per, cfg.frames, h, w, world, first_index=i * per, **opts)
    return root


@dataclass
class Batch:
    """The global batch of one step (the same on every rank)."""

    x0: torch.Tensor  # (b, C, T', H', W') clean latents
    rows: torch.Tensor  # (b,) text rows of the TextTable (0: the empty prompt)
    t: torch.Tensor  # (b,) flow times
    noise: torch.Tensor  # (b, C, T', H', W')
    bucket: Bucket
    tokens: int  # video tokens of one sample
    token_levels: torch.Tensor | None = None  # (b, T'', H'', W'') conditioning levels (edit_masks), else None


class DiTData:
    """Latents grouped by shape, their texts encoded once, and the batch of any step from (seed, step)."""

    def __init__(self, root: Path, cfg: DiTTrainConfig, model_cfg: ModelConfig, encoder, d: D.Dist):
        self.cfg, self.model_cfg, dit = cfg, model_cfg, model_cfg.dit
        raw = load_latent_groups(root)
        self.table = TextTable(encoder, [t for _, texts in raw for ts in texts for t in ts])
        groups = [LatentGroup(z, [[self.table.index[t] for t in ts] for ts in texts]) for z, texts in raw]
        t, h, w = groups[0].latents.shape[2:]
        budget = cfg.token_budget or cfg.batch * (t // dit.patch_t) * (h // dit.patch_hw) * (w // dit.patch_hw)
        frames = latent_lengths(cfg.durations_s, model_cfg)
        bucket_cfg = BucketConfig(frames=frames, token_budget=budget, max_batch=cfg.batch * MAX_BATCH_FACTOR)
        self.sampler = BucketSampler(groups, bucket_cfg, cfg.seed, d.world, patch=(dit.patch_t, dit.patch_hw))
        log.info(
            "%d clips in %d shape(s), %d texts", sum(len(g.latents) for g in groups), len(groups), len(self.table.texts)
        )
        log.info("buckets: %s", self.sampler.describe())

    def batch(self, step: int) -> Batch:
        plan = self.sampler.plan(step)
        g, b = plan.generator, len(plan.clips)
        texts = self.sampler.groups[plan.group].texts
        pick = torch.randint(1 << 30, (b,), generator=g)
        rows = torch.tensor([texts[c][p % len(texts[c])] for c, p in zip(plan.clips.tolist(), pick.tolist())])
        rows = torch.where(torch.rand(b, generator=g) < self.cfg.text_dropout, torch.zeros_like(rows), rows)
        tokens = plan.bucket.tokens(self.model_cfg.dit.patch_t, self.model_cfg.dit.patch_hw)
        shift = shift_for(self.model_cfg.timestep_shift, tokens, self.model_cfg.shift_ref_tokens)
        t = sample_train_times(b, shift, g)
        x0 = self.sampler.latents(plan)
        noise = torch.randn(x0.shape, generator=g)
        levels = None
        if self.cfg.edit_masks:
            pt, p = self.model_cfg.dit.patch_t, self.model_cfg.dit.patch_hw
            grid = (x0.shape[2] // pt, x0.shape[3] // p, x0.shape[4] // p)
            levels = sample_levels(grid, t, MaskConfig(), g)
        return Batch(x0, rows, t, noise, plan.bucket, tokens, levels)


# ----------------------------------------------------------------------------- eval


def _eval_pipeline(model_cfg: ModelConfig, vae: VideoVAE, dit: DiT, encoder, device, name: str, steps: int, out: Path):
    """generate(prompts, seeds) -> frames, over the training run's components (for quick adherence checks).

    The judged videos are marked like every video, but recorded in the run folder, not the user's ledger.
    """
    from tessera.pipeline import TesseraPipeline
    from tessera.safety.watermarker import Ledger

    pipe = TesseraPipeline(
        dit, vae, encoder, config=model_cfg, name=name, device=device, ledger=Ledger(out / "eval_ledger.sqlite3")
    )
    return lambda prompts, seeds: [o.frames for o in pipe(list(prompts), seed=list(seeds), num_inference_steps=steps)]


# ----------------------------------------------------------------------------- trainer


def check_dataset_vae(data_dir: str, vae_path: str | Path, vae: VideoVAE) -> None:
    """InputError when a prepared dataset (`data_dir`) was encoded by another VAE than `vae`: its latents
    would not fit the DiT's decoder, and training would go on without a sign of it."""
    own = Path(data_dir) / "vae.safetensors" if data_dir else None
    if own is None or not own.is_file() or own.resolve() == Path(vae_path).resolve():
        return
    theirs = load_video_vae(own).state_dict()
    ours = vae.state_dict()
    if ours.keys() != theirs.keys() or any(
        ours[k].shape != theirs[k].shape or not torch.equal(ours[k].float(), theirs[k].float()) for k in ours
    ):
        raise InputError(
            f"the dataset {data_dir} was encoded by its own VAE ({own}) and {vae_path} holds another: its latents "
            f"would not fit. Leave --vae out to train on the dataset's, or prepare the clips again with "
            f"--checkpoint {vae_path}"
        )


class DiTTrainer:
    """One DiT training run in `out`; `train()` runs it (resuming from `out/state.safetensors`)."""

    def __init__(
        self, out: Path, model_cfg: ModelConfig, vae_path: str | Path, cfg: DiTTrainConfig, name: str = "tessera-small"
    ):
        check_dit_train(cfg, model_cfg)
        self.t_start = time.time()
        self.out, self.cfg, self.name, self.d = out, cfg, name, D.init()
        out.mkdir(parents=True, exist_ok=True)
        self.vae = load_video_vae(vae_path)
        check_dataset_vae(cfg.data_dir, vae_path, self.vae)
        model_cfg.vae = self.vae.cfg
        model_cfg.dit.in_channels = self.vae.cfg.latent_channels
        self.model_cfg = model_cfg
        self.encoder = TextEncoder(model_cfg.text, device=self.d.device)
        self.data = DiTData(self._latent_root(), cfg, model_cfg, self.encoder, self.d)
        self._build_model()
        self.state = TrainState(out / "state.safetensors", self.d)
        self.run_config = {"model": asdict(model_cfg), "train": asdict(cfg)}
        self.start = self.state.load(self.dit, self.opt, self.ema, config=self.run_config)
        if self.start and cfg.time_limit_s:
            cfg.steps = self.run_config["train"]["steps"] = int(self.state.config["train"]["steps"])  # fixed at start
        self.metrics = MetricsLog(out / "dit_log.jsonl", cfg.tensorboard) if self.d.main else None
        peak = cfg.peak_tflops * 1e12 or matmul_peak_flops(torch.bfloat16, self.d.device, sizes=(2048,), seconds=1.0)
        self.peak_flops = peak
        self.final = out / f"{name}.safetensors"

    def _latent_root(self) -> Path:
        """The latent cache: a prepared dataset's, or the shapes world's, encoded once by rank 0."""
        if self.cfg.data_dir:
            return Path(self.cfg.data_dir) / "latents"
        if self.d.main:
            world_latents(self.vae, self.out, self.cfg, self.d.device)
        D.barrier(self.d)
        return self.out / "latents"

    def _build_model(self) -> None:
        """The DiT (from `init_from` if given), sharded; the EMA (this rank's shard, fp32); AdamW."""
        torch.manual_seed(self.cfg.seed)
        dit = DiT(self.model_cfg.dit)
        if self.cfg.init_from:
            tensors, _, _ = checkpoint.load(self.cfg.init_from)
            dit.load_state_dict({k: v.float() for k, v in checkpoint.split_prefix(tensors, "dit").items()})
            log.info("DiT initialised from %s", self.cfg.init_from)
        dit.enable_gradient_checkpointing(self.cfg.gradient_checkpointing)
        self.patch = dit.patch
        self.dit = D.shard(dit.to(self.d.device), self.d)
        self.ema = [D.local(p).detach().clone() for p in self.dit.parameters()]
        fused = self.d.device.type == "cuda" or not self.d.active  # fused AdamW has no DTensor CPU kernel
        c = self.cfg
        self.opt = torch.optim.AdamW(
            self.dit.parameters(), lr=c.lr, weight_decay=c.weight_decay, betas=(0.9, 0.99), fused=fused
        )

    def train(self) -> Path:
        """Run from the saved step (or 0) to `cfg.steps` (or `cfg.stop_at`); returns the generation checkpoint."""
        cfg = self.cfg
        steps = range(self.start, cfg.steps)
        bar = tqdm(steps, initial=self.start, total=cfg.steps, desc="dit", mininterval=5, disable=not self.d.main)
        self.speed = Throughput(self.peak_flops, self.d.world)
        self.dit.train()
        for step in bar:
            batch = self.data.batch(step)  # 1. data
            loss, gnorm = self.step(step, batch)  # 2. model step
            if step % cfg.log_every == 0:
                self.log_step(step, batch, loss, gnorm)
            self.fit_time_limit(step, bar)
            checkpointing = (step + 1) % cfg.checkpoint_every == 0 or step + 1 in (cfg.steps, cfg.stop_at)
            evaluating = cfg.eval_every and (step + 1) % cfg.eval_every == 0
            if checkpointing or evaluating:
                weights = self.ema_weights()
                if checkpointing:
                    self.checkpoint(step + 1, weights)  # 3. checkpoint
                if evaluating and self.d.main:
                    self.evaluate(step + 1, weights)  # 4. eval
                D.barrier(self.d)
            if step + 1 == cfg.stop_at or step + 1 >= cfg.steps:
                break
        return self.final

    def step(self, step: int, batch: Batch) -> tuple[float, float]:
        """AdamW step on this rank's slice of `batch`, in micro-batches, then the EMA; returns (loss, grad norm)."""
        lr = lr_at(step, self.cfg)
        for group in self.opt.param_groups:
            group["lr"] = lr
        b, dev = len(batch.rows), self.d.device
        per = b // self.d.world
        mine = torch.arange(self.d.rank * per, (self.d.rank + 1) * per)
        loss_sum = 0.0
        self.opt.zero_grad(set_to_none=True)
        for chunk in mine.tensor_split(min(self.cfg.grad_accum, per)):
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
                x0, noise = batch.x0[chunk].to(dev), batch.noise[chunk].to(dev)
                levels = None if batch.token_levels is None else batch.token_levels[chunk].to(dev)
                loss = flow_loss(
                    self.dit, x0, self.data.table.cond(batch.rows[chunk], dev), batch.t[chunk].to(dev), noise,
                    levels, self.patch,
                )  # fmt: skip
            (loss * len(chunk) / per).backward()
            loss_sum += loss.item() * len(chunk) / per
        gnorm = D.full(torch.nn.utils.clip_grad_norm_(self.dit.parameters(), self.cfg.grad_clip))
        self.opt.step()
        decay = min(self.cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(self.ema, self.dit.parameters()):
                e.lerp_(D.local(p).detach(), 1 - decay)
        text_len = self.data.table.tokens.shape[1]
        self.speed.add(b * batch.tokens, b * dit_train_flops(self.model_cfg.dit, batch.tokens, text_len))
        return loss_sum, float(gnorm)

    def log_step(self, step: int, batch: Batch, loss: float, gnorm: float) -> None:
        step_loss = D.mean(loss, self.d)  # a collective: every rank logs the same steps
        if not self.d.main:
            return
        bucket = [batch.bucket.frames, batch.bucket.height, batch.bucket.width]
        self.metrics.write(
            step=step, loss=step_loss, grad_norm=gnorm, lr=lr_at(step, self.cfg), **self.speed.row(), bucket=bucket,
            batch=len(batch.rows), peak_memory_mb=peak_memory_mb(self.d.device),
            params=sum(p.numel() for p in self.dit.parameters()),
        )  # fmt: skip

    def fit_time_limit(self, step: int, bar: tqdm) -> None:
        """With a time limit, fix the step count once TIMING_STEPS steps are timed (fresh runs only)."""
        if not self.cfg.time_limit_s or self.start:
            return
        if step + 1 == TIMING_FROM:
            self.t_timing = time.time()
        if step + 1 == TIMING_STEPS:
            s_per_step = D.mean((time.time() - self.t_timing) / (TIMING_STEPS - TIMING_FROM), self.d)  # same on all
            self.cfg.steps = fit_steps(self.cfg, step + 1, time.time() - self.t_start, s_per_step)
            self.run_config["train"]["steps"] = bar.total = self.cfg.steps
            log.info("time limit %.0f s: %.0f ms/step, training %d steps", self.cfg.time_limit_s, s_per_step * 1e3,
                     self.cfg.steps)  # fmt: skip

    def ema_weights(self) -> dict[str, torch.Tensor]:
        """Full EMA weights, gathered from every rank (all ranks must call this)."""
        return {k: D.full(D.like(e, p)).cpu() for (k, p), e in zip(self.dit.named_parameters(), self.ema)}

    def checkpoint(self, step: int, weights: dict[str, torch.Tensor]) -> None:
        """The resumable state (all ranks), then the generation checkpoint of the EMA weights (rank 0)."""
        self.state.save(step, self.dit, self.opt, self.run_config, ema=self.ema)
        if self.d.main:
            save_generator(self.final, self.model_cfg, self.vae, weights, self.name, step)

    def evaluate(self, step: int, weights: dict[str, torch.Tensor]) -> None:
        """Quick adherence check of the EMA weights on `eval_prompts` prompts (rank 0)."""
        from tessera.eval import adherence, eval_cases

        model = DiT(self.model_cfg.dit)
        model.load_state_dict(weights)
        gen = _eval_pipeline(self.model_cfg, self.vae, model.eval(), self.encoder, self.d.device, self.name,
                             self.cfg.eval_steps, self.out)  # fmt: skip
        result, _ = adherence(gen, eval_cases(self.cfg.eval_prompts, seed=self.cfg.eval_seed), batch=EVAL_BATCH)
        self.metrics.write(step=step, eval=result["all"])
        log.info("step %d adherence %s", step, result["all"])


def train_dit(
    out: Path, model_cfg: ModelConfig, vae_path: str | Path, cfg: DiTTrainConfig, name: str = "tessera-small"
) -> Path:
    """Train the DiT on cached VAE latents; returns the generation checkpoint path (see DiTTrainer)."""
    return DiTTrainer(out, model_cfg, vae_path, cfg, name).train()
