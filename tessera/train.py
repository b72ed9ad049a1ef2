"""Training: the VAE on pixels, then the DiT on cached VAE latents, with flow matching.

Both loops share the same habits: bf16 autocast, AdamW with warmup and cosine decay,
a progress bar, a JSON-lines log, periodic atomic checkpoints holding model, optimiser,
RNG and step, and exact resume (the data of step k depends only on the seed and k).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from tessera import checkpoint
from tessera.config import ModelConfig, VAEConfig, model_config_from_dict, vae_config_from_dict
from tessera.data.dataset import vae_batch
from tessera.diffusion.flow import flow_loss, sample_train_times
from tessera.losses import ExtraVAELoss, VAELossConfig
from tessera.models.vae import VideoVAE


@dataclass
class TrainConfig:
    steps: int = 1000
    batch: int = 8
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_fraction: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    bf16: bool = True
    stop_at: int = 0  # stop (checkpointed) after this step, as if interrupted; 0 runs to `steps`
    tensorboard: str = ""  # also write the log as TensorBoard scalars to this folder ("" = JSON lines only)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to `min_lr_fraction` of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * p)))


def save_training_state(
    path: Path, model: torch.nn.Module, opt, step: int, config: dict, extra: dict | None = None
) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(checkpoint.optimizer_tensors(opt))
    tensors["rng.torch"] = torch.get_rng_state()
    for k, v in (extra or {}).items():
        tensors[k] = v
    checkpoint.save(path, tensors, config, step=str(step))


class JsonLog:
    """Metrics as JSON lines (one object per write); optionally mirrored as TensorBoard scalars.

    Numbers become scalars at the row's `step`; a nested dict (the adherence `eval`)
    becomes `eval/colour`, `eval/shape`, ...; anything else stays in the JSON only.
    """

    def __init__(self, path: Path, tensorboard: str | Path = ""):
        self.path = path
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise RuntimeError(
                    "--tensorboard needs the tensorboard package: pip install tensorboard "
                    "(or leave it out; the JSON-lines log is always written)"
                ) from e
            self.writer = SummaryWriter(str(tensorboard))

    def write(self, **row) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None and "step" in row:
            for key, value in row.items():
                items = value.items() if isinstance(value, dict) else [("", value)]
                for sub, v in items:
                    if key != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                        self.writer.add_scalar(f"{key}/{sub}" if sub else key, v, row["step"])
            self.writer.flush()


# ----------------------------------------------------------------------------- VAE


def vae_loss(x: torch.Tensor, recon: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, kl_weight: float):
    """MSE + 0.1 × image-gradient L1 (keeps edges sharp) + KL to N(0, 1). Returns (loss, parts).

    MSE leads: with L1 terms weighted equally, PSNR after the same steps was ~5 dB lower.
    """
    mse = F.mse_loss(recon, x)

    def grads(v):
        return v[..., 1:, :] - v[..., :-1, :], v[..., :, 1:] - v[..., :, :-1]

    (gy, gx), (ry, rx) = grads(x), grads(recon)
    edge = (gy - ry).abs().mean() + (gx - rx).abs().mean()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
    loss = mse + 0.1 * edge + kl_weight * kl
    return loss, {"mse": mse.item(), "edge": edge.item(), "kl": kl.item()}


@torch.no_grad()
def measure_latent_stats(
    vae: VideoVAE, seed: int, size_px: int = 256, batches: int = 8, batch: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of raw latents over fresh training clips (17 frames, square)."""
    zs = []
    for i in range(batches):
        x = vae_batch(seed + 1, 10_000 + i, batch, 17, size_px, pan_fraction=0.1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mean, _ = vae.encode_moments(x)
        zs.append(mean.transpose(0, 1).reshape(mean.shape[1], -1))
    z = torch.cat(zs, dim=1)
    return z.mean(dim=1), z.std(dim=1)


def train_vae(
    out: Path,
    vae_cfg: VAEConfig,
    cfg: TrainConfig,
    frames: int = 9,
    size_px: int = 128,
    pan_fraction: float = 0.25,
    kl_weight: float = 1e-4,
    extra_loss: VAELossConfig | None = None,
    decoder_from: str | Path = "",
) -> Path:
    """Train the VAE on the shapes world; returns the path of the final weights.

    `extra_loss` adds SSIM and/or adversarial terms (tessera.losses); None or the default config adds nothing.

    `decoder_from` (a VAE or generation checkpoint) fine-tunes only the decoder of that VAE: the encoder
    and the latent statistics stay as they are, so the latent space, and every DiT trained on it, stays
    valid. `vae_cfg` may then add `decoder_refine_blocks` to the loaded configuration; the new blocks
    start as the identity.
    """
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "vae_state.safetensors"
    torch.manual_seed(cfg.seed)
    if decoder_from:
        from tessera.models.autoencoder import load_video_vae

        base = load_video_vae(decoder_from)
        vae_cfg = replace(base.cfg, decoder_refine_blocks=vae_cfg.decoder_refine_blocks)
        vae = VideoVAE(vae_cfg)
        missing, unexpected = vae.load_state_dict(base.state_dict(), strict=False)
        if unexpected or any(not k.startswith("decoder.refine.") for k in missing):
            raise ValueError(f"{decoder_from}: VAE weights do not fit its own config (missing {missing[:3]})")
        vae.encoder.requires_grad_(False)
        vae.encoder.eval()
    else:
        vae = VideoVAE(vae_cfg)
    trained = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    start = 0
    run_config = {"vae": asdict(vae_cfg), "train": asdict(cfg), "frames": frames, "size_px": size_px}
    run_config |= {"pan_fraction": pan_fraction, "decoder_from": str(decoder_from)}
    extra = ExtraVAELoss(extra_loss, bf16=cfg.bf16) if extra_loss and extra_loss.enabled else None
    if extra:
        run_config["extra_loss"] = asdict(extra_loss)
    if state_path.exists():
        tensors, saved, meta = checkpoint.load(state_path)
        vae_cfg = vae_config_from_dict(saved["vae"])
        vae.load_state_dict(checkpoint.split_prefix(tensors, "model"))
        checkpoint.load_optimizer_tensors(opt, tensors)
        torch.set_rng_state(tensors["rng.torch"])
        if extra:
            extra.load_state_tensors(tensors)
        start = int(meta["step"])
        print(f"resuming VAE training from step {start}")
    log = JsonLog(out / "vae_log.jsonl", cfg.tensorboard)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="vae", mininterval=5)
    t0 = time.time()
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        x = vae_batch(cfg.seed, step, cfg.batch, frames, size_px, pan_fraction)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            recon, mean, logvar = vae(x)
        loss, parts = vae_loss(x, recon, mean, logvar, kl_weight)
        if extra:
            more, more_parts = extra.generator_terms(x, recon, step)
            loss, parts = loss + more, parts | more_parts
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
        if extra:
            parts |= extra.discriminator_step(x, recon, step)  # uses recon detached
        if step % cfg.log_every == 0:
            psnr = -10 * math.log10(max(parts["mse"] / 4.0, 1e-10))
            log.write(
                step=step,
                loss=loss.item(),
                psnr=psnr,
                grad_norm=gnorm.item(),
                lr=lr_at(step, cfg),
                s=time.time() - t0,
                **parts,
            )
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr:.1f}")
        opt.step()
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 in (cfg.steps, cfg.stop_at):
            save_training_state(state_path, vae, opt, step + 1, run_config, extra.state_tensors() if extra else None)
        if step + 1 == cfg.stop_at:
            return state_path
    vae.eval()
    if not decoder_from:  # a fine-tuned decoder keeps the loaded statistics: the latent space must not move
        mean, std = measure_latent_stats(vae, cfg.seed, size_px=max(size_px, 2 * vae_cfg.spatial_factor))
        vae.latent_mean.copy_(mean)
        vae.latent_std.copy_(std.clamp_min(1e-3))
    final = out / "vae.safetensors"
    checkpoint.save(final, vae.state_dict(), asdict(vae_cfg), kind="vae", steps=str(cfg.steps), seed=str(cfg.seed))
    return final


# ----------------------------------------------------------------------------- DiT


@dataclass
class DiTTrainConfig(TrainConfig):
    clips: int = 4096  # world clips encoded into the latent cache (split over `shapes`)
    frames: int = 17  # pixel frames of each world clip (the longest duration trained)
    height_px: int = 256
    width_px: int = 256
    shapes: tuple[tuple[int, int], ...] = ()  # (height_px, width_px) of world clips; () = ((height_px, width_px),)
    bucket_frames: tuple[int, ...] = ()  # latent lengths trained at, cut from the clips' start; () = full length
    token_budget: int = 0  # video tokens per global batch; 0 = batch × tokens of one full clip of the first shape
    grad_accum: int = 1  # micro-batches per step (same result, less activation memory)
    text_dropout: float = 0.1  # share of samples trained with the empty prompt (for guidance)
    ema_decay: float = 0.999
    eval_every: int = 500  # steps between quick adherence checks (0: never)
    eval_prompts: int = 24
    init_from: str = ""  # generation checkpoint whose DiT weights start the run (continue training a bundled model)
    data_dir: str = ""  # a prepared dataset (`tessera prepare`) to train on instead of the shapes world
    wording: str = "template"  # world captions: "template" phrases or "rich" vocabularies (tessera/data/vocab)
    peak_tflops: float = 0.0  # the device's bf16 matmul peak for MFU; 0 measures it at start (~2 s)
    time_limit_s: float = 0.0  # fit the run into this wall-clock budget (see `fit_steps`); 0 = run `steps`


TIMING_STEPS = 50  # steps timed before a time-limited run fixes its step count


def fit_steps(cfg: DiTTrainConfig, done: int, elapsed_s: float, s_per_step: float) -> int:
    """The step count that ends a time-limited run inside `cfg.time_limit_s`, `done` steps in.

    Called once, after `TIMING_STEPS` steps: with warmup longer than that, the learning rate so
    far is the same for every step count, so the run is exactly the run with the returned
    step count. 5% of the budget is kept for the last checkpoints.
    """
    left = 0.95 * cfg.time_limit_s - elapsed_s
    return max(done, min(cfg.steps, done + int(left / s_per_step)))


class TextTable:
    """Every training text encoded once: row i of tokens/mask/pooled is text i; row 0 is the empty prompt."""

    def __init__(self, encoder, texts: list[str]):
        self.texts = [""] + sorted(set(texts) - {""})
        self.index = {t: i for i, t in enumerate(self.texts)}
        e = encoder(self.texts)
        self.tokens, self.mask, self.pooled = e.tokens.to(torch.bfloat16), e.mask, e.pooled

    def cond(self, rows: torch.Tensor, device: torch.device | str = "cpu") -> dict:
        return {
            "text_tokens": self.tokens[rows].float().to(device),
            "text_mask": self.mask[rows].to(device),
            "text_pooled": self.pooled[rows].to(device),
        }


def generator_tensors(vae: VideoVAE, dit: torch.nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights of a generation checkpoint, stored in bf16 (statistics buffers stay fp32)."""
    dit_state = dit if isinstance(dit, dict) else dit.state_dict()
    out = {f"vae.{k}": (v if k.startswith("latent_") else v.to(torch.bfloat16)) for k, v in vae.state_dict().items()}
    out.update({f"dit.{k}": v.to(torch.bfloat16) for k, v in dit_state.items()})
    return out


def replace_vae(generator: str | Path, vae_path: str | Path, out: str | Path) -> None:
    """Write `out`: the generation checkpoint `generator` with its VAE replaced by the one at `vae_path`.

    Only meant for a VAE with the same latent space (a fine-tuned decoder): the DiT is kept as it is.
    """
    tensors, config, meta = checkpoint.load(generator)
    if meta.get("kind") != "generator":
        raise checkpoint.CheckpointError(f"{generator} is not a generation checkpoint (kind {meta.get('kind')!r})")
    vae = load_vae(vae_path)
    dit = checkpoint.split_prefix(tensors, "dit")
    model_cfg = model_config_from_dict(config)
    model_cfg.vae = vae.cfg
    checkpoint.save(out, generator_tensors(vae, dit), asdict(model_cfg), **meta)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class DiTState:
    """Crash-safe training state of a (possibly sharded) DiT.

    Every rank writes its own shard of model, EMA and optimiser to
    `dit_state.step{N}.rank{r}.safetensors`; once all have, rank 0 atomically points
    `dit_state.json` at step N and removes older files. A crash at any moment leaves the
    pointer on a complete set, and resuming needs the same number of processes.
    """

    def __init__(self, out: Path, d):
        self.out, self.d = out, d
        self.pointer = out / "dit_state.json"

    def _path(self, step: int, rank: int) -> Path:
        return self.out / f"dit_state.step{step:07d}.rank{rank}.safetensors"

    def save(self, step: int, dit, ema: list[torch.Tensor], opt, config: dict) -> None:
        from tessera import distributed as D

        tensors = {f"model.{k}": D.local(v) for k, v in dit.state_dict().items()}
        tensors.update({f"ema.{k}": e for (k, _), e in zip(dit.named_parameters(), ema)})
        tensors.update({k: D.local(v) for k, v in checkpoint.optimizer_tensors(opt).items()})
        tensors["rng.torch"] = torch.get_rng_state()
        checkpoint.save(self._path(step, self.d.rank), tensors, config, step=str(step), world=str(self.d.world))
        D.barrier(self.d)
        if self.d.main:
            tmp = self.pointer.with_suffix(".json.tmp")
            tmp.write_text(json.dumps({"step": step, "world": self.d.world}))
            tmp.replace(self.pointer)
            for old in self.out.glob("dit_state.step*.safetensors"):
                if not old.name.startswith(f"dit_state.step{step:07d}."):
                    old.unlink(missing_ok=True)
        D.barrier(self.d)

    def load(self, dit, ema: list[torch.Tensor], opt) -> int:
        """Restore the last complete state into dit / ema / opt; returns its step (0 if none).

        The run configuration it was saved with is left in `self.config`.
        """
        from tessera import distributed as D

        self.config: dict = {}
        if not self.pointer.exists():
            return 0
        info = json.loads(self.pointer.read_text())
        if info["world"] != self.d.world:
            raise ValueError(
                f"{self.out} was trained with {info['world']} process(es); resume it with the same number "
                f"(torchrun --nproc-per-node {info['world']}) or start a new --out"
            )
        tensors, self.config, _ = checkpoint.load(self._path(info["step"], self.d.rank))
        with torch.no_grad():
            for k, v in dit.state_dict().items():
                D.local(v).copy_(tensors[f"model.{k}"])
            for (k, _), e in zip(dit.named_parameters(), ema):
                e.copy_(tensors[f"ema.{k}"])
        params = list(dit.parameters())
        wrapped = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                idx, name = k.split(".")[1:]
                wrapped[k] = D.like(v, params[int(idx)]) if v.dim() > 0 else v
        checkpoint.load_optimizer_tensors(opt, wrapped)
        torch.set_rng_state(tensors["rng.torch"])
        return int(info["step"])


def world_latents(vae: VideoVAE, out: Path, cfg: DiTTrainConfig, device: torch.device | str = "cpu") -> Path:
    """Encode the shapes-world clips once (split over `cfg.shapes`); returns the cache folder.

    Rendering runs on every core; encoding on `device` (a GPU encodes in bigger batches).
    """
    from tessera.data.latents import build_latent_cache
    from tessera.data.world import WorldConfig

    world = WorldConfig(seed=cfg.seed, wording=cfg.wording)
    shapes = cfg.shapes or ((cfg.height_px, cfg.width_px),)
    on_gpu = torch.device(device).type == "cuda"
    opts = dict(device=device, workers=os.cpu_count() or 1, batch=32 if on_gpu else 8)
    if len(shapes) == 1:
        build_latent_cache(vae, out / "latents", cfg.clips, cfg.frames, *shapes[0], world, **opts)
        return out / "latents"
    per = cfg.clips // len(shapes)
    for i, (h, w) in enumerate(shapes):
        build_latent_cache(vae, out / "latents" / f"{h}x{w}", per, cfg.frames, h, w, world, first_index=i * per, **opts)
    return out / "latents"


def train_dit(
    out: Path, model_cfg: ModelConfig, vae_path: Path, cfg: DiTTrainConfig, name: str = "tessera-small"
) -> Path:
    """Train the DiT on cached VAE latents; returns the generation checkpoint path.

    Runs in one process, or in N under torchrun with FSDP: every rank draws the same
    global batch (a function of seed and step) and trains on its 1/N slice of it.
    """
    from tessera import distributed as D
    from tessera.data.buckets import BucketConfig, BucketSampler, LatentGroup
    from tessera.data.latents import load_latent_groups
    from tessera.diffusion.flow import shift_for
    from tessera.eval import adherence, eval_cases
    from tessera.flops import dit_train_flops, matmul_peak_flops
    from tessera.models.dit import DiT
    from tessera.models.text import TextEncoder
    from tessera.pipeline import TesseraPipeline
    from tessera.safety.watermarker import Ledger

    t_start = time.time()
    if cfg.time_limit_s and cfg.warmup_steps < TIMING_STEPS:
        raise ValueError(
            f"a time limit needs --warmup of at least {TIMING_STEPS} steps (got {cfg.warmup_steps}): the step "
            "count is fixed after timing that many steps, and the schedule must not depend on it before then"
        )
    d = D.init()
    out.mkdir(parents=True, exist_ok=True)
    vae = load_vae(vae_path)
    model_cfg.vae = vae.cfg
    model_cfg.dit.in_channels = vae.cfg.latent_channels
    dcfg = model_cfg.dit

    # 1. latents and texts, encoded once (by rank 0), grouped by shape
    if cfg.data_dir:
        root = Path(cfg.data_dir) / "latents"
    else:
        root = out / "latents"
        if d.main:
            world_latents(vae, out, cfg, d.device)
        D.barrier(d)
    raw = load_latent_groups(root)
    encoder = TextEncoder(model_cfg.text, device=d.device)
    table = TextTable(encoder, [t for _, texts in raw for ts in texts for t in ts])
    groups = [LatentGroup(z, [[table.index[t] for t in ts] for ts in texts]) for z, texts in raw]
    first = groups[0].latents.shape[2:]
    budget = cfg.token_budget or cfg.batch * (first[0] // dcfg.patch_t) * (first[1] // dcfg.patch_hw) * (
        first[2] // dcfg.patch_hw
    )
    bucket_cfg = BucketConfig(frames=cfg.bucket_frames, token_budget=budget, max_batch=max(cfg.batch, 1) * 8)
    sampler = BucketSampler(groups, bucket_cfg, cfg.seed, d.world, patch=(dcfg.patch_t, dcfg.patch_hw))
    if d.main:
        print(f"{sum(len(g.latents) for g in groups)} clips in {len(groups)} shape(s), {len(table.texts)} texts")
        print("buckets:", json.dumps(sampler.describe()))

    # 2. model, EMA (this rank's shard, fp32), optimiser; resume if a state exists
    torch.manual_seed(cfg.seed)
    dit = DiT(dcfg)
    if cfg.init_from:
        tensors, _, _ = checkpoint.load(cfg.init_from)
        dit.load_state_dict({k: v.float() for k, v in checkpoint.split_prefix(tensors, "dit").items()})
        if d.main:
            print(f"DiT initialised from {cfg.init_from}")
    dit = D.shard(dit.to(d.device), d)
    ema = [D.local(p).detach().clone() for p in dit.parameters()]
    fused = d.device.type == "cuda" or not d.active  # fused AdamW has no DTensor CPU kernel
    opt = torch.optim.AdamW(dit.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99), fused=fused)
    state = DiTState(out, d)
    run_config = {"model": asdict(model_cfg), "train": asdict(cfg)}
    start = state.load(dit, ema, opt)
    if start and cfg.time_limit_s:
        cfg.steps = int(state.config["train"]["steps"])  # the count fixed when the run first started
        run_config["train"]["steps"] = cfg.steps
    if start and d.main:
        print(f"resuming DiT training from step {start} of {cfg.steps}")
    n_params = sum(p.numel() for p in dit.parameters())
    peak = cfg.peak_tflops * 1e12 or matmul_peak_flops(torch.bfloat16, d.device, sizes=(2048,), seconds=1.0)
    text_len = table.tokens.shape[1]
    log = JsonLog(out / "dit_log.jsonl", cfg.tensorboard) if d.main else None
    final = out / f"{name}.safetensors"

    def ema_model_state() -> dict[str, torch.Tensor]:
        """Full EMA weights, gathered from every rank (all ranks must call this)."""
        return {k: D.full(D.like(e, p)).cpu() for (k, p), e in zip(dit.named_parameters(), ema)}

    cases = eval_cases(cfg.eval_prompts, seed=99)

    def quick_eval(step: int, weights: dict[str, torch.Tensor]) -> None:
        model = DiT(dcfg)
        model.load_state_dict(weights)
        scratch = out / "eval_ledger.jsonl"  # judged videos are marked, but not kept in the user's ledger
        pipe = TesseraPipeline(
            model.eval(), vae, encoder, config=model_cfg, name=name, device=d.device, ledger=Ledger(scratch)
        )

        def gen(prompts, seeds):
            return [o.frames for o in pipe(list(prompts), seed=list(seeds), num_inference_steps=20)]

        result, _ = adherence(gen, cases, batch=8)
        log.write(step=step, eval=result["all"])
        print(f"step {step} adherence {result['all']}")

    # 3. train
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="dit", mininterval=5, disable=not d.main)
    t0, seen_tokens, seen_flops = time.time(), 0, 0.0
    amp = dict(device_type=d.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    dit.train()
    for step in bar:
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        # the global batch: same on every rank, from (seed, step) only
        plan = sampler.plan(step)
        g, b = plan.generator, len(plan.clips)
        texts = sampler.groups[plan.group].texts
        pick = torch.randint(1 << 30, (b,), generator=g)
        rows = torch.tensor([texts[c][p % len(texts[c])] for c, p in zip(plan.clips.tolist(), pick.tolist())])
        rows = torch.where(torch.rand(b, generator=g) < cfg.text_dropout, torch.zeros_like(rows), rows)
        tokens = plan.bucket.tokens(dcfg.patch_t, dcfg.patch_hw)
        t = sample_train_times(b, shift_for(model_cfg.timestep_shift, tokens, model_cfg.shift_ref_tokens), g)
        x0 = sampler.latents(plan)
        noise = torch.randn(x0.shape, generator=g)
        # this rank's slice, in micro-batches
        per = b // d.world
        mine = torch.arange(d.rank * per, (d.rank + 1) * per)
        loss_sum = 0.0
        opt.zero_grad(set_to_none=True)
        for chunk in mine.tensor_split(min(cfg.grad_accum, per)):
            with torch.autocast(**amp):
                loss = flow_loss(
                    dit,
                    x0[chunk].to(d.device),
                    table.cond(rows[chunk], d.device),
                    t[chunk].to(d.device),
                    noise[chunk].to(d.device),
                )
            (loss * len(chunk) / per).backward()
            loss_sum += loss.item() * len(chunk) / per
        gnorm = D.full(torch.nn.utils.clip_grad_norm_(dit.parameters(), cfg.grad_clip))
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, dit.parameters()):
                e.lerp_(D.local(p).detach(), 1 - decay)
        seen_tokens += b * tokens
        seen_flops += b * dit_train_flops(dcfg, tokens, text_len)
        if step % cfg.log_every == 0:
            step_loss = D.mean(loss_sum, d)
            if d.main:
                el = time.time() - t0
                log.write(
                    step=step,
                    loss=step_loss,
                    grad_norm=float(gnorm),
                    lr=lr,
                    s=el,
                    bucket=[plan.bucket.frames, plan.bucket.height, plan.bucket.width],
                    batch=b,
                    tokens_per_s=seen_tokens / max(el, 1e-9),
                    mfu=seen_flops / max(el, 1e-9) / (peak * d.world),
                    peak_memory_mb=peak_memory_mb(d.device),
                    params=n_params,
                )
                bar.set_postfix(loss=f"{step_loss:.4f}")
        timing = cfg.time_limit_s and start == 0
        if timing and step + 1 == 10:  # the first steps warm up caches and kernels: time from step 10
            t_timing = time.time()
        if timing and step + 1 == TIMING_STEPS:
            s_per_step = D.mean((time.time() - t_timing) / (TIMING_STEPS - 10), d)  # the same on every rank
            cfg.steps = fit_steps(cfg, step + 1, time.time() - t_start, s_per_step)
            run_config["train"]["steps"] = bar.total = cfg.steps
            if d.main:
                print(
                    f"time limit {cfg.time_limit_s:.0f} s: {s_per_step * 1000:.0f} ms/step, training {cfg.steps} steps"
                )
        checkpointing = (step + 1) % cfg.checkpoint_every == 0 or step + 1 in (cfg.steps, cfg.stop_at)
        evaluating = cfg.eval_every and (step + 1) % cfg.eval_every == 0
        if checkpointing or evaluating:
            weights = ema_model_state()
            if checkpointing:
                state.save(step + 1, dit, ema, opt, run_config)
                if d.main:
                    checkpoint.save(
                        final, generator_tensors(vae, weights), asdict(model_cfg), kind="generator", name=name,
                        steps=str(step + 1),
                    )  # fmt: skip
            if evaluating and d.main:
                quick_eval(step + 1, weights)
            D.barrier(d)
        if step + 1 == cfg.stop_at or step + 1 >= cfg.steps:
            break
    return final


def load_vae(path: str | Path) -> VideoVAE:
    tensors, config, _ = checkpoint.load(path)
    vae = VideoVAE(vae_config_from_dict(config))
    vae.load_state_dict(tensors)
    return vae.eval()
