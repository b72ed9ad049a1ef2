"""The shapes world: procedural captioned clips, VAE training batches and the DiT's latent cache.

scenes.py        what a clip shows (ClipSpec) and how it is drawn (render)
captions.py      short titles -> long captions in varied wording
samples.py       clip `index` of a seeded world; square pixel batches for the VAE
latent_cache.py  world clips encoded once into latent shards
"""

from tessera.data.pixels import frames_to_tensor
from tessera.data.shards import load_latent_groups
from tessera.data.world.captions import caption, simple_prompt, training_text
from tessera.data.world.latent_cache import build_latent_cache
from tessera.data.world.samples import clip_rng, vae_batch, world_clip
from tessera.data.world.scenes import (
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    MOTIONS,
    PHOTOS,
    SHAPES,
    ClipSpec,
    ShapeObject,
    WorldConfig,
    all_combos,
    held_out_combos,
    render,
    sample_spec,
    spec_for,
)

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "DIRECTIONS",
    "MOTIONS",
    "PHOTOS",
    "SHAPES",
    "ClipSpec",
    "ShapeObject",
    "WorldConfig",
    "all_combos",
    "build_latent_cache",
    "caption",
    "clip_rng",
    "frames_to_tensor",
    "held_out_combos",
    "load_latent_groups",
    "render",
    "sample_spec",
    "simple_prompt",
    "spec_for",
    "training_text",
    "vae_batch",
    "world_clip",
]
