"""Encode: a clip's frames at a training shape -> VAE latents; and the sizes the model accepts.

The valid sizes come from the components, not from literals (`tessera.geometry`): the
loaded VAE's spatial and temporal factors and the DiT's patch (from the checkpoint's config
when it is a generation checkpoint, else the DiT defaults).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tessera import checkpoint
from tessera.config import DiTConfig, model_config_from_dict, to_dict
from tessera.data.ingest.probe import clip_times, read_frames
from tessera.data.ingest.record import ClipRecord
from tessera.errors import InputError
from tessera.geometry import Geometry
from tessera.models.autoencoder import load_video_vae, video_vae_from_checkpoint
from tessera.models.vae import VideoVAE


def model_path(path: str) -> Path:
    """The checkpoint `path`, or the bundled model's when it is empty."""
    return Path(path) if path else checkpoint.bundled_path()


def load_vae(path: str) -> tuple[VideoVAE, DiTConfig]:
    """The VAE of a generation or VAE checkpoint ("" = bundled), and the DiT settings its latents are for:
    the checkpoint's own for a generation checkpoint, else the defaults. CheckpointError for anything else."""
    src = model_path(path)
    tensors, config, meta = checkpoint.load(src)
    if meta.get("kind") not in ("generator", "vae"):
        raise checkpoint.CheckpointError(
            f"{src} is a {meta.get('kind')!r} checkpoint; pass a generation (VAE + DiT) or a VAE checkpoint"
        )
    vae = video_vae_from_checkpoint(src, tensors, config, meta)
    return vae, model_config_from_dict(config).dit if meta["kind"] == "generator" else DiTConfig()


def geometry_of(path: str) -> Geometry:
    """The clip sizes checkpoint `path` ("" = bundled) accepts: its VAE's factors × its DiT patch."""
    vae, dit = load_vae(path)
    return Geometry.of(vae, dit, output=False)


def check_shape(geometry: Geometry, shape: str) -> tuple[int, int]:
    """`448x256` -> (width_px, height_px); InputError with a fix when `geometry` does not accept it."""
    w, h = parse_shape(shape)
    try:
        geometry.check_size(w, h)
    except InputError as e:
        raise InputError(f"--shapes {shape}: {e}") from None
    return w, h


def parse_shape(s: str) -> tuple[int, int]:
    """`448x256` -> (width_px, height_px); InputError with an example when it is not WIDTHxHEIGHT."""
    try:
        w, h = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise InputError(f"shape {s!r} is not WIDTHxHEIGHT in pixels, e.g. 448x256") from None
    return w, h


def nearest_shape(width_px: int, height_px: int, shapes: Iterable[str]) -> str:
    """The training shape whose aspect ratio is closest (in log ratio) to the video's; first one on ties."""
    a = math.log(width_px / height_px)
    return min(shapes, key=lambda s: abs(math.log(parse_shape(s)[0] / parse_shape(s)[1]) - a))


def copy_vae(path: str, out: Path) -> Path:
    """Write the VAE of checkpoint `path` ("" = bundled) to `out` as a VAE-only checkpoint, unless it exists."""
    if not out.exists():
        vae, _ = load_vae(path)
        checkpoint.save(out, vae.state_dict(), to_dict(vae.cfg), kind="vae", source=model_path(path).name)
    return out


# ----------------------------------------------------------------------------- the stage (one clip)


def clip_pixels(clip: ClipRecord, shape: str, frames: int, fps: float) -> np.ndarray:
    """Frames of a clip at a training shape: sampled at `fps`, scaled to cover, centre-cropped; (T, H, W, 3)."""
    import cv2

    w, h = parse_shape(shape)
    x = read_frames(clip.source, clip_times(clip.start_s, clip.end_s, fps, frames))
    if len(x) == 0:
        raise ValueError(f"no frame of {clip.id} decodes")
    if len(x) < frames:  # the last frame is held when the clip ends a fraction of a frame early
        x = np.concatenate([x, np.repeat(x[-1:], frames - len(x), axis=0)])
    fh, fw = x.shape[1:3]
    s = max(w / fw, h / fh)
    size = (max(w, round(fw * s)), max(h, round(fh * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    y0, x0 = (size[1] - h) // 2, (size[0] - w) // 2
    return np.stack([cv2.resize(f, size, interpolation=interp)[y0 : y0 + h, x0 : x0 + w] for f in x])


_VAES: dict[tuple[str, str], VideoVAE] = {}


def encode_clip(clip: ClipRecord, frames: int, fps: float, vae_path: str, out_file: str, device: str = "cpu") -> dict:
    """Stage 5: VAE latents of one clip at `clip.shape`, written to `out_file` as (C, T', H', W') bf16.

    `device` is where the VAE runs ("cpu", or "cuda" in a task that was given a GPU)."""
    import torch

    from tessera.data.pixels import frames_to_tensor

    if (vae_path, device) not in _VAES:  # one VAE per worker process and device
        _VAES[vae_path, device] = load_video_vae(vae_path).to(device)
    x = frames_to_tensor(clip_pixels(clip, clip.shape, frames, fps))[None].to(device)  # (1, 3, T, H, W)
    with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        z = _VAES[vae_path, device].encode(x).to(torch.bfloat16)[0].cpu()  # (C, T', H', W')
    checkpoint.save(out_file, {"latent": z}, {"id": clip.id, "shape": clip.shape})
    return {"file": Path(out_file).name}


def shard_meta(frames: int, fps: float, shape: str, clips: int) -> dict:
    w, h = parse_shape(shape)
    return {"frames": frames, "height_px": h, "width_px": w, "fps": fps, "clips": clips}
