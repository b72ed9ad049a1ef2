"""VAE figures: reconstruction quality, speed and memory, a matched training race with a Wan-style VAE,
and tiled decoding of a 720p clip.

    python benchmarks/vae.py                      # everything, writes benchmarks/results/vae.json
    python benchmarks/vae.py --quick --steps 5    # a smoke run with tiny sizes (seconds to minutes)
    python benchmarks/vae.py --only recon speed   # a subset: recon, speed, race, tiled

(a) recon:  PSNR / SSIM of the bundled VAE on held-out clips (a seed never trained on), shapes
            and photo pans separately, deterministic latents.
(b) speed:  encode and decode frames per second and peak RSS, each in a fresh process.
(c) race:   our VideoVAE (the bundled VAE's architecture, untrained) and a diffusers AutoencoderKLWan with the same
            compression (16× space, 4× time, 16 channels) and comparable widths, trained for
            --steps on the same batches with the same loss and optimiser; PSNR / SSIM on the
            same held-out clips and the decode speed ratio (ours / Wan).
(d) tiled:  tiled decode of a 1280×720, 49-frame latent (peak RSS, time) in a fresh process,
            and tiled vs untiled PSNR at a size where untiled fits.
(e) capacity: what simple codes with a given number of latent numbers reach on the same
            held-out clips (area down-sampling, the best linear block code): how big a latent
            a PSNR target needs.
(f) footage: the real-footage preset (8× space, 4× time, 32 channels) beside a diffusers
            AutoencoderKLWan of the same compression and size (10.7 M against 10.3 M parameters):
            decode and encode speed and peak memory, each in a fresh process.

    python benchmarks/vae.py --only recon footage --vae tessera/weights/tessera-footage-vae.safetensors \
        --out benchmarks/results/vae_footage.json           # the footage preset's figures
    python benchmarks/vae.py --only race --race-preset footage --out ...   # the training race at 8× / 32

`--only` updates those sections of an existing results file and keeps the others.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from tessera.config import PRESETS
from tessera.data.world import WorldConfig, clip_rng, frames_to_tensor, sample_spec, vae_batch, world_clip
from tessera.metrics import psnr, ssim
from tessera.models.autoencoder import DiffusersVAE, load_video_vae
from tessera.models.tiling import TilingConfig, tiled_decode
from tessera.models.vae import VideoVAE
from tessera.training import TrainConfig, lr_at, vae_loss

HELD_OUT_SEED = 4242  # training used seed 0 (clips drawn with seed + 7919)


def held_out(n: int, frames: int, size_px: int, pan_fraction: float, seed: int = HELD_OUT_SEED) -> torch.Tensor:
    cfg = WorldConfig(seed=seed, pan_fraction=pan_fraction, exclude_held_out=False)
    return torch.stack([frames_to_tensor(world_clip(seed, i, frames, size_px, size_px, cfg)[0]) for i in range(n)])


def peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls of fn()."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def in_fresh_process(fn, *args):
    """Run fn(*args) -> dict in a spawned process, so its peak RSS is its own."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


@torch.no_grad()
def reconstruct(vae, x: torch.Tensor, batch: int = 4) -> torch.Tensor:
    outs = []
    for i in range(0, len(x), batch):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(vae.decode(vae.encode(x[i : i + batch])).float().clamp(-1, 1))
    return torch.cat(outs)


def quality(vae, x: torch.Tensor) -> tuple[dict, list[float]]:
    """Mean PSNR / SSIM of `vae`'s reconstructions of x, and each clip's PSNR."""
    y = reconstruct(vae, x)
    p = psnr(y, x)
    return {
        "psnr_db": round(p.mean().item(), 2),
        "ssim": round(ssim(y, x).mean().item(), 4),
        "clips": len(x),
    }, p.tolist()


# ----------------------------------------------------------------------------- (a) recon


def held_out_photos(n: int, seed: int = HELD_OUT_SEED) -> list[str]:
    """Which photo each of the first n held-out pan clips shows."""
    cfg = WorldConfig(seed=seed, pan_fraction=1.0, exclude_held_out=False)
    return [sample_spec(clip_rng(seed, i), 1.0, cfg).photo for i in range(n)]


def bench_recon(args) -> dict:
    vae = load_video_vae(args.vae or None)
    out = {"size_px": args.size, "frames": args.frames, "seed": HELD_OUT_SEED, "vae": asdict(vae.cfg)}
    for name, pan in (("shapes", 0.0), ("pans", 1.0)):
        out[name], per_clip = quality(vae, held_out(args.clips, args.frames, args.size, pan))
        if pan:
            by_photo: dict[str, list[float]] = {}
            for photo, v in zip(held_out_photos(len(per_clip)), per_clip):
                by_photo.setdefault(photo, []).append(v)
            out[name]["psnr_db_by_photo"] = {k: round(sum(v) / len(v), 2) for k, v in sorted(by_photo.items())}
        print(f"recon {name}: {out[name]}")
    return out


# ----------------------------------------------------------------------------- (e) capacity


def _blocks(x: torch.Tensor, space: int, time_: int) -> torch.Tensor:
    """(B, 3, 1 + k·time_, H, W) -> (N, 3·time_·space²): frames after the first, cut into space-time blocks."""
    return rearrange(x[:, :, 1:], "b c (t k) (h p) (w q) -> (b t h w) (c k p q)", k=time_, p=space, q=space)


def clip_psnr(err: torch.Tensor, clips: int) -> float:
    """Mean over clips of each clip's PSNR (as `psnr` in (a)), from errors ordered clip by clip."""
    mse = err.reshape(clips, -1).pow(2).mean(dim=1)
    return round((10 * torch.log10(4 / mse)).mean().item(), 2)


def bench_capacity(args) -> dict:
    """How many numbers per clip a reconstruction target needs, whatever the network.

    Two codes with no learning in the decoder, on the same held-out clips as (a):
    * area down-sampling of every frame by f, then bicubic up-sampling (3 numbers per f×f pixels);
    * the best linear code (PCA) of space-time blocks, fitted on training clips, keeping k
      numbers per block; at (16 px, 4 frames, 16) it has exactly as many numbers as our latent.
    A trained non-linear decoder beats the linear code by a few dB; a target far above the
    linear figure at our latent size needs a bigger latent, not a longer run.
    """
    vae = load_video_vae().cfg
    ours = (vae.spatial_factor, vae.temporal_factor, vae.latent_channels)  # a block code as big as our latent
    n_train = 8 if args.quick else 48
    size, frames = (64, 9) if args.quick else (args.size, args.frames)
    out = {
        "size_px": size,
        "frames": frames,
        "latent_numbers_per_pixel_frame": round(ours[2] / (ours[0] ** 2 * ours[1]), 5),
    }
    codes = [ours] if args.quick else [ours, (8, 4, 16), (8, 4, 32), (8, 4, 64)]
    for name, pan in (("shapes", 0.0), ("pans", 1.0)):
        x = held_out(args.clips, frames, size, pan)
        train = held_out(n_train, frames, size, pan, seed=7)
        row: dict[str, dict] = {}
        fr = rearrange(x, "b c t h w -> (b t) c h w")
        for f in (4, 8, 16):
            y = F.interpolate(F.avg_pool2d(fr, f), scale_factor=f, mode="bicubic").clamp(-1, 1)
            row[f"downsample_{f}x"] = {"psnr_db": clip_psnr(y - fr, len(x)),
                                       "numbers_per_pixel_frame": round(3 / f**2, 5)}  # fmt: skip
        for space, time_, k in codes:
            b = _blocks(train, space, time_)
            mu = b.mean(0)
            _, _, v = torch.pca_lowrank(b - mu, q=k, center=False, niter=4)
            bx = _blocks(x, space, time_)
            err = ((bx - mu) @ v @ v.T + mu).clamp(-1, 1) - bx
            row[f"pca_{space}px_{time_}f_{k}"] = {"psnr_db": clip_psnr(err, len(x)),
                                                  "numbers_per_pixel_frame": round(k / (space**2 * time_), 5)}  # fmt: skip
        out[name] = row
        print(f"capacity {name}: {row}")
    return out


# ----------------------------------------------------------------------------- (b) speed


def _speed_child(op: str, frames: int, size_px: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    vae = load_video_vae()
    x = held_out(1, frames, size_px, 0.5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        z = vae.encode(x)
        base = rss_mib()
        s = median_seconds(lambda: vae.encode(x) if op == "encode" else vae.decode(z), repeats)
    return {
        "seconds": round(s, 3),
        "fps": round(frames / s, 2),
        "peak_rss_mib": round(peak_rss_mib()),
        "rss_before_mib": round(base),
    }


def bench_speed(args) -> dict:
    out = {"size_px": args.size, "frames": args.frames, "batch": 1, "threads": torch.get_num_threads()}
    for op in ("encode", "decode"):
        out[op] = in_fresh_process(_speed_child, op, args.frames, args.size, args.repeats, torch.get_num_threads())
        print(f"speed {op}: {out[op]}")
    return out


# ----------------------------------------------------------------------------- (c) race


def wan_like(quick: bool, spatial: int = 16) -> DiffusersVAE:
    """AutoencoderKLWan with our compression: 16× space (4 down-samples) and 16 channels like the bundled VAE, or
    8× space (3 down-samples) and 32 channels like the footage preset; the last two down-samples also halve time."""
    from diffusers import AutoencoderKLWan

    base = 8 if quick else 32
    if spatial == 16:  # widths 32 / 64 / 64 / 128 / 256 at 1× / 2× / 4× / 8× / 16×
        mult, in_time, z = [1, 2, 2, 4, 8], [False, False, True, True], 16
    else:  # widths 32 / 64 / 128 / 128 at 1× / 2× / 4× / 8×: 10.3 M parameters against the footage preset's 10.7 M
        mult, in_time, z = [1, 2, 4, 4], [False, True, True], 32
    model = AutoencoderKLWan(
        base_dim=base,
        z_dim=z,
        dim_mult=mult,
        num_res_blocks=1,
        temperal_downsample=in_time,
        latents_mean=[0.0] * z,
        latents_std=[1.0] * z,
        scale_factor_spatial=spatial,
        scale_factor_temporal=4,
    )
    return DiffusersVAE(model)


def train_steps(model: torch.nn.Module, args, quick: bool) -> dict:
    """The VAE recipe's loop: same batches, loss, optimiser and schedule for any model returning (recon, mean, logvar)."""
    cfg = TrainConfig(steps=args.steps, batch=args.train_batch, lr=1e-3, warmup_steps=max(1, min(100, args.steps // 5)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    model.train()
    t0, last = time.perf_counter(), {}
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        x = vae_batch(0, step, cfg.batch, args.train_frames, args.train_size, pan_fraction=0.25)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            recon, mean, logvar = model(x)
        loss, last = vae_loss(x, recon, mean, logvar, kl_weight=1e-4)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    model.eval()
    return {"train_s": round(time.perf_counter() - t0, 1), "final_mse": round(last.get("mse", float("nan")), 5)}


class _Raw(torch.nn.Module):
    """Un-normalised encode / decode, so freshly trained models (no latent statistics yet) compare fairly."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def encode(self, x):
        return self.vae.encode_moments(x)[0]

    def decode(self, z):
        return self.vae.decoder(z).float() if isinstance(self.vae, VideoVAE) else self.vae.decode_raw(z)


def decode_fps(vae, frames: int, size_px: int, repeats: int) -> float:
    x = held_out(1, frames, size_px, 0.5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        z = vae.encode(x)
        return frames / median_seconds(lambda: vae.decode(z), repeats)


def bench_race(args) -> dict:
    torch.manual_seed(0)
    # the bundled VAE's architecture, or a preset's (footage: 8× space, 32 channels)
    ours_cfg = PRESETS[args.race_preset].vae if args.race_preset else load_video_vae().cfg
    if args.quick:
        ours_cfg = type(ours_cfg)(**{**asdict(PRESETS["tiny"].vae), "latent_channels": ours_cfg.latent_channels,
                                     "patch_px": ours_cfg.patch_px})  # fmt: skip
    models = {"ours": VideoVAE(ours_cfg), "wan": wan_like(args.quick, ours_cfg.spatial_factor)}
    half = max(1, args.race_clips // 2)
    x = torch.cat(
        [
            held_out(half, args.train_frames, args.train_size, 0.0),
            held_out(half, args.train_frames, args.train_size, 1.0),
        ]
    )
    out = {
        "ours_vae": asdict(ours_cfg),
        "steps": args.steps,
        "batch": args.train_batch,
        "frames": args.train_frames,
        "size_px": args.train_size,
        "loss": "MSE + 0.1 edge L1 + 1e-4 KL (tessera.training.vae_loss), AdamW lr 1e-3 warmup + cosine, bf16 autocast",
        "held_out_clips": len(x),
    }
    for name, model in models.items():
        row = {"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
        row |= train_steps(model, args, args.quick)
        row |= quality(_Raw(model), x)[0]
        row["decode_fps"] = round(decode_fps(_Raw(model), args.frames, args.size, args.repeats), 2)
        out[name] = row
        print(f"race {name}: {row}")
    out["decode_speed_ratio_ours_over_wan"] = round(out["ours"]["decode_fps"] / out["wan"]["decode_fps"], 2)
    out["decode_fps_at"] = {"size_px": args.size, "frames": args.frames}
    print(f"race decode speed ratio ours / wan: {out['decode_speed_ratio_ours_over_wan']}")
    return out


# ----------------------------------------------------------------------------- (f) footage


def _footage_child(
    kind: str, vae_path: str, frames: int, size_px: int, repeats: int, threads: int, quick: bool
) -> dict:
    """Encode and decode seconds, frames per second and peak RSS of one VAE, alone in this process."""
    torch.set_num_threads(threads)
    if kind == "wan":
        vae = _Raw(wan_like(quick, spatial=8))
    else:
        vae = _Raw(load_video_vae(vae_path) if vae_path else VideoVAE(PRESETS["footage"].vae))
    params = sum(p.numel() for p in vae.parameters())
    x = held_out(1, frames, size_px, 1.0)
    out: dict = {"params_m": round(params / 1e6, 2)}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        z = vae.encode(x)
        out["latent"] = list(z.shape)
        for op, fn in (("encode", lambda: vae.encode(x)), ("decode", lambda: vae.decode(z))):
            s = median_seconds(fn, repeats)
            out[op] = {"seconds": round(s, 3), "fps": round(frames / s, 2)}
    out["peak_rss_mib"] = round(peak_rss_mib())
    return out


def bench_footage(args) -> dict:
    """The footage preset's VAE (trained, from --vae, or untrained) and a Wan VAE of matched size: speed and memory."""
    size, frames = (64, 5) if args.quick else (args.size, args.frames)
    out = {"size_px": size, "frames": frames, "batch": 1, "threads": torch.get_num_threads(), "vae": args.vae}
    for kind in ("ours", "wan"):
        out[kind] = in_fresh_process(
            _footage_child, kind, args.vae, frames, size, args.repeats, torch.get_num_threads(), args.quick
        )
        print(f"footage {kind}: {out[kind]}")
    for op in ("encode", "decode"):
        out[f"{op}_speed_ratio_ours_over_wan"] = round(out["ours"][op]["fps"] / out["wan"][op]["fps"], 2)
    out["peak_rss_ratio_ours_over_wan"] = round(out["ours"]["peak_rss_mib"] / out["wan"]["peak_rss_mib"], 2)
    return out


# ----------------------------------------------------------------------------- (d) tiled


def _tiled_child(latent_shape: tuple, tile: dict, threads: int) -> dict:
    torch.set_num_threads(threads)
    vae = load_video_vae()
    z = torch.randn(latent_shape, generator=torch.Generator().manual_seed(0))
    base = rss_mib()
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = tiled_decode(vae, z, TilingConfig(**tile))
    return {
        "output": list(y.shape),
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mib": round(peak_rss_mib()),
        "rss_before_mib": round(base),
    }


def bench_tiled(args) -> dict:
    tile = {"tile_latent": args.tile, "overlap_latent": args.overlap, "chunk_latent_frames": args.chunk}
    h, w, t = (128, 224, 9) if args.quick else (720, 1280, 49)
    latent = (1, 16, 1 + (t - 1) // 4, h // 16, w // 16)
    big = in_fresh_process(_tiled_child, latent, tile, torch.get_num_threads())
    big["peak_rss_gib"] = round(big["peak_rss_mib"] / 1024, 2)
    print(f"tiled decode {w}x{h}x{t}: {big}")
    vae = load_video_vae()
    size, frames = (96, 9) if args.quick else (args.compare_size, 17)
    cmp_tile = TilingConfig(**tile) if not args.quick else TilingConfig(4, 2, 1)
    x = held_out(2, frames, size, 0.5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        z = vae.encode(x)
        whole = vae.decode(z).float()
        tiled = tiled_decode(vae, z, cmp_tile).float()
    compare = {
        "size_px": size,
        "frames": frames,
        "tiling": asdict(cmp_tile),
        "tiled_vs_untiled_psnr_db": round(psnr(tiled, whole).mean().item(), 2),
    }
    print(f"tiled vs untiled: {compare}")
    return {"decode_720p": {"size": [w, h, t], "tiling": tile, **big}, "compare": compare}


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--only", nargs="+", choices=["recon", "speed", "race", "tiled", "capacity", "footage"], default=None
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes and models: checks the script runs")
    ap.add_argument("--clips", type=int, default=32, help="held-out clips per kind for (a)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60, help="training steps per model in (c)")
    ap.add_argument("--train-batch", type=int, default=2)
    ap.add_argument("--train-size", type=int, default=128)
    ap.add_argument("--train-frames", type=int, default=9)
    ap.add_argument("--race-clips", type=int, default=16, help="held-out clips (half shapes, half pans) for (c)")
    ap.add_argument("--race-preset", default="", help="(c) races this preset's VAE (default: the bundled one's)")
    ap.add_argument("--tile", type=int, default=TilingConfig.tile_latent)
    ap.add_argument("--overlap", type=int, default=TilingConfig.overlap_latent)
    ap.add_argument("--chunk", type=int, default=TilingConfig.chunk_latent_frames)
    ap.add_argument(
        "--compare-size", type=int, default=768, help="square size for tiled vs untiled (needs > tile × 16)"
    )
    ap.add_argument("--vae", default="", help="VAE or generation checkpoint for (a) (default: the bundled model's)")
    ap.add_argument("--out", default="benchmarks/results/vae.json")
    args = ap.parse_args()
    if args.quick:
        args.clips, args.size, args.frames, args.repeats = 2, 64, 5, 1
        args.train_size, args.train_frames, args.race_clips = 32, 5, 2
    sections = {
        "recon": bench_recon, "speed": bench_speed, "race": bench_race, "tiled": bench_tiled, "capacity": bench_capacity,
        "footage": bench_footage,
    }  # fmt: skip
    path = Path(args.out)
    kept = json.loads(path.read_text()) if args.only and path.is_file() else {}
    if kept.get("quick", args.quick) != args.quick:
        kept = {}  # never mix quick and full figures in one file
    results = kept | {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
        "torch": torch.__version__,
        "quick": args.quick,
    }
    t0 = time.perf_counter()
    for name in args.only or sections:
        s = time.perf_counter()
        results[name] = sections[name](args)
        results[name]["section_s"] = round(time.perf_counter() - s, 1)
        results[name]["measured"] = time.strftime("%Y-%m-%d %H:%M")
    results["total_s"] = round(time.perf_counter() - t0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path} ({results['total_s']} s)")


if __name__ == "__main__":
    main()
