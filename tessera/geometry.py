"""One geometry derived from the components: which video sizes are valid, and how many tokens they make.

Every size check and token count in Tessera goes through here, so the rules follow the
VAE and the DiT instead of literals:

    geo = Geometry.of(vae, dit.cfg)           # the pipeline's
    geo.check_size(width_px=250, height_px=256)   -> InputError "width 250 px is not a multiple of 32 ..."
    frames = geo.frames_for(duration_s=2.0, fps=8)   # 17 = 1 + 4k
    geo.latent_shape(frames, 256, 256)        # (16, 5, 16, 16)
    geo.tokens(frames, 256, 256)              # 320

Sides are multiples of `unit_px` (VAE spatial factor × DiT patch); frame counts are
1 + k × `frame_step` (the VAE compresses time by its temporal factor and encodes the
first frame alone, so an image is a 1-frame video).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tessera.errors import InputError

MIN_SIDE_PX = 128  # every output carries the invisible watermark, whose tile is 128 px
MAX_SIDE_PX = 2048


@dataclass(frozen=True)
class Geometry:
    spatial_factor: int  # pixels per latent cell, per side
    temporal_factor: int  # pixel frames per latent frame (after the first)
    latent_channels: int
    patch_t: int = 1  # latent frames per token
    patch_hw: int = 1  # latent cells per token, per side
    min_side_px: int = 1
    max_side_px: int = 1 << 16

    @classmethod
    def of(cls, vae, dit_cfg=None, output: bool = True) -> Geometry:
        """From a `VideoAutoencoder` and (optionally) a `DiTConfig`; `output` adds the watermark's size limits."""
        return cls(
            spatial_factor=vae.spatial_factor,
            temporal_factor=vae.temporal_factor,
            latent_channels=vae.latent_channels,
            patch_t=dit_cfg.patch_t if dit_cfg else 1,
            patch_hw=dit_cfg.patch_hw if dit_cfg else 1,
            min_side_px=MIN_SIDE_PX if output else 1,
            max_side_px=MAX_SIDE_PX if output else 1 << 16,
        )

    @property
    def unit_px(self) -> int:
        """Sides must be multiples of this."""
        return self.spatial_factor * self.patch_hw

    @property
    def frame_step(self) -> int:
        """Valid frame counts are 1 + k × temporal_factor whose latent length is a multiple of patch_t."""
        return self.temporal_factor * self.patch_t

    def latent_frames(self, frames: int) -> int:
        return 1 + (frames - 1) // self.temporal_factor

    def nearest_side(self, v: float) -> int:
        near = round(v / self.unit_px) * self.unit_px
        return int(min(max(near, self.min_side_px, self.unit_px), self.max_side_px))

    def check_size(self, width_px: int, height_px: int) -> None:
        """Raise InputError naming the nearest valid side when a side is not usable."""
        u = self.unit_px
        for name, v in (("width", width_px), ("height", height_px)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise InputError(f"{name} must be a whole number of pixels, got {v!r}")
            why = self._patch_words()
            if v % u or v <= 0:
                raise InputError(f"{name} {v} px is not a multiple of {u} ({why}); try {self.nearest_side(v)}")
            if not self.min_side_px <= v <= self.max_side_px:
                raise InputError(
                    f"{name} {v} px is outside the supported {self.min_side_px}–{self.max_side_px} px"
                    f"{' (the watermark needs 128)' if self.min_side_px == MIN_SIDE_PX else ''}; "
                    f"try {self.nearest_side(v)}"
                )

    def _patch_words(self) -> str:
        if self.patch_hw == 1:
            return "the VAE's spatial factor"
        return f"VAE {self.spatial_factor} × patch {self.patch_hw}"

    def _frames_of_latent(self, latent_frames: int) -> int:
        return 1 + (latent_frames - 1) * self.temporal_factor

    def _nearest_frames(self, frames: float) -> int:
        t = max(1, round((frames - 1) / self.temporal_factor) + 1)  # latent frames
        return self._frames_of_latent(self.patch_t * max(1, math.ceil(t / self.patch_t)))

    def check_frames(self, frames: int) -> None:
        tf, pt = self.temporal_factor, self.patch_t
        if frames < 1 or (frames - 1) % tf or self.latent_frames(frames) % pt:
            rule = f"1 + k × {tf}" + (f" with 1 + k a multiple of {pt} (DiT patch)" if pt > 1 else "")
            raise InputError(f"{frames} frames is not of the form {rule}; try {self._nearest_frames(max(frames, 1))}")

    def check_video(self, frames: int, height_px: int, width_px: int) -> None:
        self.check_size(width_px, height_px)
        self.check_frames(frames)

    def frames_for(self, duration_s: float, fps: float) -> int:
        """The valid frame count (at least 1 + temporal_factor) nearest to `duration_s` at `fps`."""
        t = max(2, 1 + round((duration_s * fps - 1) / self.temporal_factor))  # latent frames
        return self._frames_of_latent(self.patch_t * math.ceil(t / self.patch_t))

    def latent_shape(self, frames: int, height_px: int, width_px: int) -> tuple[int, int, int, int]:
        """(C, T', H', W') of the latent of a video of this size."""
        return (
            self.latent_channels,
            1 + (frames - 1) // self.temporal_factor,
            height_px // self.spatial_factor,
            width_px // self.spatial_factor,
        )

    def tokens(self, frames: int, height_px: int, width_px: int) -> int:
        """Spacetime tokens the DiT sees for a video of this size."""
        _, t, h, w = self.latent_shape(frames, height_px, width_px)
        return (t // self.patch_t) * (h // self.patch_hw) * (w // self.patch_hw)
