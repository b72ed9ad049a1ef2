"""Named training recipes: the bundled model's stages (tessera/weights/MODEL_CARD.md) as data.

A recipe is a set of field values for RunConfig, VAETrainConfig and DiTTrainConfig; a
stage it leaves out (None) is not run. `tessera train --recipe tessera-small:stage5` runs
one, and flags override its values (`tessera train dit --recipe tessera-small:stage5
--steps 100`). Each stage reads the previous stage's output at the run folders below, so
running stage1, stage2, ... in order retrains the bundled model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from tessera.errors import InputError
from tessera.training.config import DiTTrainConfig, RunConfig, VAETrainConfig

SMALL_VAE = "runs/small/vae/vae.safetensors"
BUCKETS = dict(
    shapes=((256, 256), (256, 448), (448, 256)), frames=33, durations_s=(1.0, 2.0, 4.0)
)  # 3 shapes x 1/2/4 s
BUNDLED = "tessera/weights/tessera-small.safetensors"  # the shipped model, from the repository root


def _dit_on_cpu(seed: int, steps: int, eval_every: int, init_from: str) -> dict[str, Any]:
    """Stages 2 to 4: the DiT continued on stage 1's latent cache (2048 square 2 s clips of world seed 0)."""
    return dict(
        init_from=init_from, data_dir="runs/small/dit", steps=steps, lr=5e-4, warmup_steps=100, batch=16,
        clips=2048, eval_every=eval_every, eval_prompts=16, checkpoint_every=100, seed=seed,
    )  # fmt: skip


FROM_BUNDLED = dict(vae=BUNDLED, shift=3.0, shift_ref_tokens=320)  # run fields of a stage continuing the bundled model


def _masked_from_bundled(**changes: Any) -> dict[str, Any]:
    """The edit stage and stage 9: the bundled DiT continued on new bucketed clips with conditioning masks."""
    base = dict(init_from=BUNDLED, **BUCKETS, steps=20000, lr=3e-4, eval_every=0, edit_masks=True)
    return base | changes


def _footage_vae(**changes: Any) -> dict[str, Any]:
    """The footage VAE's stages on one GPU: batches of 12 square 256 px 9-frame clips, 15 render workers."""
    base = dict(batch=12, size_px=256, frames=9, kl_weight=1e-4, workers=15, checkpoint_every=1000, log_every=25)
    return base | changes


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    run: dict[str, Any]  # RunConfig fields
    vae: dict[str, Any] | None = None  # VAETrainConfig fields; None: no VAE stage
    dit: dict[str, Any] | None = None  # DiTTrainConfig fields; None: no DiT stage
    stages: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(s for s in ("vae", "dit") if getattr(self, s) is not None))
        for values, cls in ((self.run, RunConfig), (self.vae, VAETrainConfig), (self.dit, DiTTrainConfig)):
            unknown = set(values or {}) - {f.name for f in fields(cls)}
            if unknown:
                raise ValueError(f"recipe {self.name}: {sorted(unknown)} are not fields of {cls.__name__}")


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "tessera-small:stage1",
            "VAE 1200 steps on 128 px clips, then a latent cache of 2048 square 2 s clips and the DiT for 1900 steps "
            "(2-core CPU: 28 + 14 + 60 min)",
            run=dict(out="runs/small", preset="small", shift=1.5, shift_ref_tokens=0),
            vae=dict(
                steps=1200,
                batch=6,
                lr=1e-3,
                warmup_steps=100,
                checkpoint_every=50,
                frames=9,
                size_px=128,
                pan_fraction=0.25,
                kl_weight=1e-4,
                seed=0,
            ),
            dit=dict(
                steps=1900,
                batch=16,
                lr=8e-4,
                warmup_steps=200,
                clips=2048,
                frames=17,
                height_px=256,
                width_px=256,
                ema_decay=0.999,
                text_dropout=0.1,
                eval_every=500,
                eval_prompts=16,
                checkpoint_every=100,
                seed=0,
            ),
        ),  # fmt: skip
        Recipe(
            "tessera-small:stage2",
            "DiT from stage 1, 3000 steps at lr 5e-4 with shift 3, same cache and batch order (CPU, 99 min)",
            run=dict(out="runs/cont", vae=SMALL_VAE, shift=3.0, shift_ref_tokens=0),
            dit=_dit_on_cpu(seed=0, steps=3000, eval_every=750, init_from="runs/small/dit/tessera-small.safetensors"),
        ),
        Recipe(
            "tessera-small:stage3",
            "DiT from stage 2, 2800 steps, new batch order (seed 1) on the same cache (CPU, 91 min)",
            run=dict(out="runs/cont3", vae=SMALL_VAE, shift=3.0, shift_ref_tokens=0),
            dit=_dit_on_cpu(seed=1, steps=2800, eval_every=700, init_from="runs/cont/dit/tessera-small.safetensors"),
        ),
        Recipe(
            "tessera-small:stage4",
            "DiT from stage 3, 3500 steps, batch order seed 2 on the same cache (CPU, 111 min)",
            run=dict(out="runs/cont4", vae=SMALL_VAE, shift=3.0, shift_ref_tokens=0),
            dit=_dit_on_cpu(seed=2, steps=3500, eval_every=700, init_from="runs/cont3/dit/tessera-small.safetensors"),
        ),
        Recipe(
            "tessera-small:stage5",
            "DiT from stage 4 on 6000 new clips (world seed 3), buckets of 3 shapes x 1/2/4 s, 8.2 min on one H200",
            run=dict(out="runs/buckets", vae=SMALL_VAE, shift=3.0, shift_ref_tokens=320),
            dit=dict(
                init_from="runs/cont4/dit/tessera-small.safetensors",
                **BUCKETS,
                clips=6000,
                batch=64,
                token_budget=49152,
                steps=20000,
                time_limit_s=8.2 * 60,
                lr=5e-4,
                warmup_steps=200,
                seed=3,
                eval_every=0,
                checkpoint_every=1000,
            ),
        ),  # fmt: skip
        Recipe(
            "tessera-small:stage6",
            "VAE decoder alone from stage 5's checkpoint, 2 refine blocks, 3000 steps at 256 px (CPU, 93 min)",
            run=dict(out="runs/dec", decoder_refine_blocks=2),
            vae=dict(
                decoder_from="runs/buckets/dit/tessera-small.safetensors",
                steps=3000,
                batch=2,
                size_px=256,
                frames=9,
                pan_fraction=0.3,
                lr=3e-4,
                warmup_steps=100,
                checkpoint_every=50,
                kl_weight=1e-4,
                seed=0,
            ),
        ),  # fmt: skip
        Recipe(
            "tessera-small:edit",
            "DiT from the bundled model on 1200 new clips (world seed 4) with rich captions and random conditioning "
            "masks, buckets of 3 shapes x 1/2/4 s, 80 min on the 2-core CPU",
            run=dict(out="runs/edit", **FROM_BUNDLED),
            dit=_masked_from_bundled(
                clips=1200,
                batch=16,
                token_budget=5120,
                time_limit_s=80 * 60,
                warmup_steps=100,
                seed=4,
                checkpoint_every=100,
                wording="rich",
            ),
        ),  # fmt: skip
        Recipe(
            "tessera-small:stage9",
            "DiT from the bundled model on one GPU: 6000 new clips (world seed 5) captioned in every word of the "
            "vocabularies, 25% with two objects, random conditioning masks, buckets of 3 shapes x 1/2/4 s, 8.5 min",
            run=dict(out="runs/stage9", **FROM_BUNDLED),
            dit=_masked_from_bundled(
                clips=6000,
                batch=64,
                token_budget=49152,
                time_limit_s=8.5 * 60,
                warmup_steps=200,
                seed=5,
                checkpoint_every=500,
                wording="full",
                two_objects=0.25,
            ),
        ),  # fmt: skip
        Recipe(
            "tessera-footage:vae1",
            "the footage preset's VAE (8x space, 4x time, 32 channels) from scratch on one GPU: 3239 steps of 12 "
            "square 256 px 9-frame clips, half of them photo pans, 15 render workers (H200: 6.2 min)",
            run=dict(out="runs/footage", preset="footage"),
            vae=_footage_vae(steps=3239, pan_fraction=0.5, lr=1e-3, warmup_steps=200, seed=0),
        ),  # fmt: skip
        Recipe(
            "tessera-footage:vae2",
            "the footage VAE continued from vae1: 2124 steps on new clips (seed 1), 60% photo pans, lr 3e-4 "
            "(H200: 4 min); the shipped tessera/weights/tessera-footage-vae.safetensors",
            run=dict(out="runs/footage2", preset="footage"),
            vae=_footage_vae(
                init_from="runs/footage/vae/vae.safetensors",
                steps=2124,
                pan_fraction=0.6,
                lr=3e-4,
                warmup_steps=60,
                seed=1,
            ),
        ),  # fmt: skip
    ]
}


def get(name: str) -> Recipe:
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)} (or --recipe list)")
    return RECIPES[name]
