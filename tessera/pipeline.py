"""Text -> video: encode the prompt, denoise a random latent with the DiT, decode once.

pipe = TesseraPipeline.from_checkpoint()          # the bundled model
frames = pipe("a red circle moving left on a black background", seed=0)  # (T, H, W, 3) uint8
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from tessera import checkpoint
from tessera.config import ModelConfig, model_config_from_dict
from tessera.diffusion.flow import shift_for
from tessera.diffusion.sample import euler_sample, guided
from tessera.models.dit import DiT
from tessera.models.text import TextEmbedding, TextEncoder
from tessera.models.tiling import TilingConfig, tiled_decode
from tessera.models.vae import VideoVAE

MIN_SIDE_PX = 128  # every output carries the invisible watermark, whose tile is 128 px
MAX_SIDE_PX = 2048
TILED_DECODE_ABOVE_PX = 512 * 512 * 33  # output pixels × frames per video; above this, decode in tiles and chunks


def bundled_checkpoint() -> Path:
    """Path of the small model that ships inside the package."""
    return Path(str(resources.files("tessera") / "weights" / "tessera-small.safetensors"))


@dataclass
class GenerateRequest:
    """One generation. Sizes in pixels; duration in seconds."""

    prompt: str
    seed: int = 0
    steps: int = 25
    guidance: float = 4.0
    width_px: int | None = None  # None: the model's default
    height_px: int | None = None
    duration_s: float | None = None
    fps: int | None = None


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TesseraPipeline:
    """Text -> video frames. VAE and DiT run on `device` (default: a GPU if there is one, else
    the CPU) under bf16 autocast; the text encoder stays on the CPU; noise is drawn on the CPU,
    so a seed gives the same starting point on every device."""

    def __init__(
        self,
        cfg: ModelConfig,
        vae: VideoVAE,
        dit: DiT,
        text: TextEncoder,
        name: str = "tessera",
        device: str | torch.device | None = None,
    ):
        self.device = torch.device(device) if device else default_device()
        self.cfg, self.text, self.name = cfg, text, name
        self.vae, self.dit = vae.to(self.device), dit.to(self.device)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path | None = None, text: TextEncoder | None = None, device: str | torch.device | None = None
    ) -> TesseraPipeline:
        """Load a generation checkpoint (VAE + DiT + config); default: the bundled model."""
        path = Path(path) if path else bundled_checkpoint()
        tensors, config, meta = checkpoint.load(path)
        if meta.get("kind") != "generator":
            raise checkpoint.CheckpointError(
                f"{path} is a {meta.get('kind', 'unknown')!r} checkpoint, not a generation model (VAE + DiT)"
            )
        cfg = model_config_from_dict(config)
        vae, dit = VideoVAE(cfg.vae), DiT(cfg.dit)
        try:
            vae.load_state_dict({k: v.float() for k, v in checkpoint.split_prefix(tensors, "vae").items()})
            dit.load_state_dict({k: v.float() for k, v in checkpoint.split_prefix(tensors, "dit").items()})
        except RuntimeError as e:
            raise checkpoint.CheckpointError(f"{path} does not match its own config: {e}") from e
        name = meta.get("name", path.stem)
        return cls(cfg, vae.eval(), dit.eval(), text or TextEncoder(cfg.text), name=name, device=device)

    # ------------------------------------------------------------------ sizes
    def resolve(self, req: GenerateRequest) -> tuple[int, int, int, int]:
        """(frames, height_px, width_px, fps) for a request; raises ValueError with a fix for bad sizes."""
        cfg = self.cfg
        h = req.height_px or cfg.height_px
        w = req.width_px or cfg.width_px
        fps = req.fps or cfg.fps
        dur = cfg.duration_s if req.duration_s is None else req.duration_s
        unit = cfg.vae.spatial_factor * cfg.dit.patch_hw
        for name, v in (("width", w), ("height", h)):
            near = min(max(round(v / unit) * unit, MIN_SIDE_PX), MAX_SIDE_PX)
            if v % unit:
                raise ValueError(
                    f"{name} {v} px is not a multiple of {unit} (VAE {cfg.vae.spatial_factor} × patch {cfg.dit.patch_hw}); try {near}"
                )
            if not MIN_SIDE_PX <= v <= MAX_SIDE_PX:
                raise ValueError(
                    f"{name} {v} px is outside the supported {MIN_SIDE_PX}–{MAX_SIDE_PX} px (the watermark needs {MIN_SIDE_PX}); try {near}"
                )
        if not 1 <= fps <= 60:
            raise ValueError(f"fps {fps} is outside the supported range 1–60")
        if not (0 < dur <= cfg.max_duration_s):
            raise ValueError(f"duration {dur} s is outside the supported range (0, {cfg.max_duration_s}] s")
        tf = cfg.vae.temporal_factor * cfg.dit.patch_t
        frames = 1 + max(1, round((dur * fps - 1) / tf)) * tf
        return frames, h, w, fps

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self, reqs: list[GenerateRequest], progress: Callable[[int, int], None] | None = None
    ) -> list[np.ndarray]:
        """Generate a batch of requests of one size; returns uint8 frames (T, H, W, 3) for each."""
        shapes = {self.resolve(r) for r in reqs}
        if len(shapes) != 1:
            raise ValueError("one batch must share size, duration and fps; split the requests")
        frames, h, w, _ = shapes.pop()
        steps = {r.steps for r in reqs}
        guidance = {r.guidance for r in reqs}
        if len(steps) != 1 or len(guidance) != 1:
            raise ValueError("one batch must share steps and guidance")
        n_steps, g = steps.pop(), guidance.pop()
        if not 1 <= n_steps <= 1000:
            raise ValueError(f"steps {n_steps} is outside 1–1000")

        # 1. encode the prompts (and the empty prompt for guidance)
        cond = self._cond(self.text([r.prompt for r in reqs]))
        uncond = self._cond(self.text.empty(len(reqs)))

        # 2. prepare the initial noise, one generator per request so a seed means the same video in any batch
        vcfg = self.cfg.vae
        shape = (
            vcfg.latent_channels,
            1 + (frames - 1) // vcfg.temporal_factor,
            h // vcfg.spatial_factor,
            w // vcfg.spatial_factor,
        )
        noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(r.seed)) for r in reqs])
        noise = noise.to(self.device)

        # 3. denoise all spacetime patches together, with classifier-free guidance,
        #    on the time schedule this shape was trained with
        dcfg = self.cfg.dit
        tokens = (shape[1] // dcfg.patch_t) * (shape[2] // dcfg.patch_hw) * (shape[3] // dcfg.patch_hw)
        shift = shift_for(self.cfg.timestep_shift, tokens, self.cfg.shift_ref_tokens)
        amp = dict(device_type=self.device.type, dtype=torch.bfloat16)
        with torch.autocast(**amp):
            latents = euler_sample(guided(self.dit, cond, uncond, g), noise, n_steps, shift, progress)

        # 4. decode once (tiled and chunked in time for large videos, so memory stays bounded)
        with torch.autocast(**amp):
            if frames * h * w > TILED_DECODE_ABOVE_PX:
                video = tiled_decode(self.vae, latents.float(), TilingConfig())  # (B, 3, T, H, W)
            else:
                video = self.vae.decode(latents.float())  # (B, 3, T, H, W)
        video = rearrange(video.clamp(-1, 1), "b c t h w -> b t h w c")
        return [((v + 1) * 127.5).round().byte().cpu().numpy() for v in video]

    def __call__(self, prompt: str, **kwargs) -> np.ndarray:
        return self.generate([GenerateRequest(prompt=prompt, **kwargs)])[0]

    def _cond(self, e: TextEmbedding) -> dict:
        return {
            k: v.to(self.device)
            for k, v in (("text_tokens", e.tokens), ("text_mask", e.mask), ("text_pooled", e.pooled))
        }
