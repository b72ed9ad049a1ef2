"""Variable-shape batches: clips keep their aspect ratio and length, batches fill a token budget.

Latents are grouped by shape (a `LatentGroup` per (C, T', H', W')). A `Bucket` is a
latent shape a batch is trained at. A clip fits a bucket when its spatial shape is the
bucket's and it has at least the bucket's latent frames: longer clips are cut to the
bucket's length from their start. Because the VAE is causal, the first k latent frames
of a clip are exactly the latents of its first 1 + 4·(k − 1) pixel frames, so this cut
is a true shorter clip, not an approximation.

Batches are a pure function of (seed, step): step k picks a bucket with probability
proportional to `weight × clips that fit`, then `batch` clips that fit, where `batch`
is `token_budget // tokens` (rounded down to a multiple of the number of processes).
Resuming at step k therefore continues the same run, and every process of a
data-parallel run draws the same global batch and takes its own slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Bucket:
    """A latent shape batches are trained at: frames, height, width (latent units)."""

    frames: int
    height: int
    width: int

    def tokens(self, patch_t: int = 1, patch_hw: int = 2) -> int:
        return (self.frames // patch_t) * (self.height // patch_hw) * (self.width // patch_hw)


@dataclass
class LatentGroup:
    """Clips of one latent shape: latents (N, C, T', H', W') and each clip's candidate texts."""

    latents: torch.Tensor
    texts: list[list[int]]  # per clip: rows of the text table

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.latents.shape[2:])  # type: ignore[return-value]


@dataclass
class BucketConfig:
    """Which buckets to use and how big their batches are.

    `frames` lists the latent lengths to train at (cut from longer clips); each spatial
    shape present in the data is combined with each length that fits. `weights` maps a
    latent length to a sampling weight (default 1).
    """

    frames: tuple[int, ...] = ()  # latent lengths; () = each group's full length only
    token_budget: int = 5120  # video tokens per global batch
    max_batch: int = 64
    weights: tuple[tuple[int, float], ...] = ()  # ((latent frames, weight), ...)


@dataclass(frozen=True)
class BatchPlan:
    """What one step trains on: the bucket, and for each sample its group and clip index."""

    bucket: Bucket
    group: int
    clips: torch.Tensor  # (batch,) indices into the group
    generator: torch.Generator  # continues the step's random stream (texts, times, noise)


class BucketSampler:
    def __init__(self, groups: list[LatentGroup], cfg: BucketConfig, seed: int, world_size: int = 1, patch=(1, 2)):
        if not groups:
            raise ValueError("no latent groups: the dataset is empty")
        self.groups, self.cfg, self.seed, self.world = groups, cfg, seed, world_size
        self.options: list[tuple[Bucket, int, int, float]] = []  # (bucket, group, batch, weight)
        weights = dict(cfg.weights)
        for gi, g in enumerate(groups):
            t, h, w = g.shape
            for f in cfg.frames or (t,):
                if f > t:
                    continue
                b = Bucket(f, h, w)
                batch = min(cfg.max_batch, cfg.token_budget // b.tokens(*patch))
                batch -= batch % world_size
                if batch < world_size:
                    raise ValueError(
                        f"bucket {b} has {b.tokens(*patch)} tokens per clip, more than the token budget "
                        f"{cfg.token_budget} allows for {world_size} process(es); raise --token-budget"
                    )
                self.options.append((b, gi, batch, weights.get(f, 1.0) * len(g.latents)))
        if not self.options:
            lengths = sorted({g.shape[0] for g in groups})
            raise ValueError(f"no bucket fits: latent lengths {cfg.frames} but the clips have {lengths}")
        total = sum(o[3] for o in self.options)
        self.probs = torch.tensor([o[3] / total for o in self.options], dtype=torch.float64)

    def plan(self, step: int) -> BatchPlan:
        """The global batch of `step`: a function of (seed, step) only."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        k = int(torch.multinomial(self.probs, 1, generator=g))
        bucket, gi, batch, _ = self.options[k]
        clips = torch.randint(len(self.groups[gi].latents), (batch,), generator=g)
        return BatchPlan(bucket, gi, clips, g)

    def latents(self, plan: BatchPlan, rows: slice | None = None) -> torch.Tensor:
        """(b, C, T', H', W') float latents of the plan (or of `rows` of it), cut to the bucket's length."""
        idx = plan.clips if rows is None else plan.clips[rows]
        return self.groups[plan.group].latents[idx, :, : plan.bucket.frames].float()

    def describe(self) -> list[dict]:
        return [
            {"frames": b.frames, "height": b.height, "width": b.width, "batch": n, "p": round(float(p), 4)}
            for (b, _, n, _), p in zip(self.options, self.probs)
        ]
