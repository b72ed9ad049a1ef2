"""The VAE stage: train the causal video VAE on the shapes world, or fine-tune its decoder alone.

    final = train_vae(Path("runs/small/vae"), PRESETS["small"].vae, VAETrainConfig())

A run resumes from `OUT/state.safetensors` (tessera.training.state) when started again,
and the clips of step k depend only on the seed and k, so it continues the same run.
It trains on the GPU when there is one; `workers` processes render the clips ahead of the
optimiser (a GPU step is faster than rendering a batch on one core).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from tessera import checkpoint
from tessera.config import VAEConfig
from tessera.data.world import vae_batch  # the one import from tessera.data
from tessera.errors import InputError
from tessera.losses import ExtraVAELoss, VAELossConfig
from tessera.models.autoencoder import load_video_vae
from tessera.models.vae import VideoVAE
from tessera.training.config import TIMING_FROM, TIMING_STEPS, VAETrainConfig, check_vae_train
from tessera.training.logs import MetricsLog
from tessera.training.schedule import fit_steps, lr_at
from tessera.training.state import TrainState

log = logging.getLogger(__name__)
STATS_BATCHES, STATS_BATCH = 8, 4  # clips measured for the latent statistics: batches × clips
STATS_FRAMES = 17


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
def measure_latent_stats(vae: VideoVAE, seed: int, size_px: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of raw latents over fresh training clips (17 frames, square), on the VAE's device."""
    zs, device = [], next(vae.parameters()).device
    for i in range(STATS_BATCHES):
        x = vae_batch(seed + 1, 10_000 + i, STATS_BATCH, STATS_FRAMES, size_px, pan_fraction=0.1).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            mean, _ = vae.encode_moments(x)
        zs.append(mean.float().transpose(0, 1).reshape(mean.shape[1], -1))  # (C, B·T'·H'·W')
    z = torch.cat(zs, dim=1)
    return z.mean(dim=1), z.std(dim=1)


class StepClips(torch.utils.data.Dataset):
    """Item i: the clips (B, 3, T, H, W) of step `start + i`; a DataLoader renders them in worker processes."""

    def __init__(self, cfg: VAETrainConfig, start: int):
        self.cfg, self.start = cfg, start

    def __len__(self) -> int:
        return max(self.cfg.steps - self.start, 0)

    def __getitem__(self, i: int) -> torch.Tensor:
        c = self.cfg
        return vae_batch(c.seed, self.start + i, c.batch, c.frames, c.size_px, c.pan_fraction)


def step_clips(cfg: VAETrainConfig, start: int, pin: bool):
    """The training clips of steps start, start + 1, ... in order, rendered `cfg.workers` batches ahead."""
    loader = torch.utils.data.DataLoader(
        StepClips(cfg, start), batch_size=None, shuffle=False, num_workers=cfg.workers, pin_memory=pin,
        prefetch_factor=4 if cfg.workers else None, generator=torch.Generator(),  # leaves the global RNG alone
    )  # fmt: skip
    return iter(loader)


def build_vae(vae_cfg: VAEConfig, decoder_from: str | Path = "", init_from: str | Path = "") -> VideoVAE:
    """A fresh VAE; the VAE of `init_from` to train further (its config must be `vae_cfg`); or the VAE of
    `decoder_from` with a frozen encoder and `vae_cfg`'s refine blocks added."""
    if init_from:
        if decoder_from:
            raise InputError("give --vae-init-from or --vae-decoder-from, not both")
        if not Path(init_from).is_file():
            raise InputError(f"--vae-init-from {init_from} is not a file; give a VAE or generation checkpoint")
        vae = load_video_vae(init_from)
        if vae.cfg != vae_cfg:
            raise InputError(f"--vae-init-from {init_from} holds a VAE of config {vae.cfg}, not the preset's {vae_cfg}")
        return vae.train()
    if not decoder_from:
        return VideoVAE(vae_cfg)
    if not Path(decoder_from).is_file():
        raise InputError(f"--vae-decoder-from {decoder_from} is not a file; give a VAE or generation checkpoint")
    base = load_video_vae(decoder_from)
    vae = VideoVAE(replace(base.cfg, decoder_refine_blocks=vae_cfg.decoder_refine_blocks))
    missing, unexpected = vae.load_state_dict(base.state_dict(), strict=False)
    if unexpected or any(not k.startswith("decoder.refine.") for k in missing):
        raise InputError(f"{decoder_from}: VAE weights do not fit its own config (missing {missing[:3]})")
    vae.encoder.requires_grad_(False)
    vae.encoder.eval()
    return vae


def _vae_step(vae, opt, trained, extra, x: torch.Tensor, step: int, cfg: VAETrainConfig) -> dict[str, float]:
    """One optimiser step on the clips `x`; returns the logged numbers."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        recon, mean, logvar = vae(x)
    loss, parts = vae_loss(x, recon, mean, logvar, cfg.kl_weight)
    if extra:
        more, more_parts = extra.generator_terms(x, recon, step)
        loss, parts = loss + more, parts | more_parts
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
    if extra:
        parts |= extra.discriminator_step(x, recon, step)  # uses recon detached
    opt.step()
    psnr = -10 * math.log10(max(parts["mse"] / 4.0, 1e-10))
    return {"loss": loss.item(), "psnr": psnr, "grad_norm": gnorm.item()} | parts


def _save_final(out: Path, vae: VideoVAE, cfg: VAETrainConfig) -> Path:
    """Measure the latent statistics (a fresh VAE only) and write `out/vae.safetensors`."""
    vae.eval()
    if not cfg.decoder_from:  # a fine-tuned decoder keeps the loaded statistics: the latent space must not move
        mean, std = measure_latent_stats(vae, cfg.seed, size_px=max(cfg.size_px, 2 * vae.cfg.spatial_factor))
        vae.latent_mean.copy_(mean)
        vae.latent_std.copy_(std.clamp_min(1e-3))
    final = out / "vae.safetensors"
    meta = {"kind": "vae", "steps": str(cfg.steps), "seed": str(cfg.seed)}
    checkpoint.save(final, {k: v.cpu() for k, v in vae.state_dict().items()}, asdict(vae.cfg), **meta)
    return final


def train_vae(out: Path, vae_cfg: VAEConfig, cfg: VAETrainConfig, extra_loss: VAELossConfig | None = None) -> Path:
    """Train the VAE on the shapes world; returns the path of the final weights (`out/vae.safetensors`).

    `extra_loss` adds SSIM and/or adversarial terms (tessera.losses). `cfg.decoder_from` (a VAE or
    generation checkpoint) fine-tunes only the decoder of that VAE: the encoder and the latent
    statistics stay as they are, so the latent space, and every DiT trained on it, stays valid;
    `vae_cfg.decoder_refine_blocks` may add blocks, which start as the identity.
    """
    check_vae_train(cfg, vae_cfg.spatial_factor, vae_cfg.temporal_factor)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    vae = build_vae(vae_cfg, cfg.decoder_from, cfg.init_from).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every step has the same shapes: cuDNN picks its fastest kernels
    if extra_loss and extra_loss.enabled and device.type != "cpu":
        raise InputError("the SSIM / adversarial VAE terms run on the CPU only; train without them or on a CPU machine")
    trained = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    extra = ExtraVAELoss(extra_loss, bf16=cfg.bf16) if extra_loss and extra_loss.enabled else None
    run_config = {"vae": asdict(vae.cfg), "train": asdict(cfg)} | ({"extra_loss": asdict(extra_loss)} if extra else {})
    state = TrainState(out / "state.safetensors")
    start = state.load(vae, opt, config=run_config)
    if extra and start:
        extra.load_state_tensors(state.tensors)
    if start and cfg.time_limit_s:  # a resumed time-limited run keeps the step count it fixed at its start
        cfg = replace(cfg, steps=int(state.config["train"]["steps"]))
        run_config["train"]["steps"] = cfg.steps
    metrics = MetricsLog(out / "vae_log.jsonl", cfg.tensorboard)
    clips = step_clips(cfg, start, pin=device.type == "cuda")
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="vae", mininterval=5)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        x = next(clips).to(device, non_blocking=True)  # (B, 3, T, H, W)
        row = _vae_step(vae, opt, trained, extra, x, step, cfg)
        if step % cfg.log_every == 0:
            metrics.write(step=step, lr=lr_at(step, cfg), s=time.time() - t0, **row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{row['psnr']:.1f}")
        if cfg.time_limit_s and not start and step + 1 in (TIMING_FROM, TIMING_STEPS):
            if step + 1 == TIMING_FROM:
                t_timing = time.time()  # the first steps warm caches up and are not timed
            else:
                s_per_step = (time.time() - t_timing) / (TIMING_STEPS - TIMING_FROM)
                cfg = replace(cfg, steps=fit_steps(cfg, step + 1, time.time() - t0, s_per_step))
                run_config["train"]["steps"] = bar.total = cfg.steps
                log.info("time limit %.0f s: %.0f ms/step, training %d steps", cfg.time_limit_s, s_per_step * 1e3,
                         cfg.steps)  # fmt: skip
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 in (cfg.steps, cfg.stop_at):
            state.save(step + 1, vae, opt, run_config, extra=extra.state_tensors() if extra else None)
        if step + 1 == cfg.stop_at:
            return state.path
        if step + 1 >= cfg.steps:
            break
    return _save_final(out, vae, cfg)
