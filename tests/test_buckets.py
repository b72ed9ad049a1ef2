"""Variable-shape batches and the resolution-dependent timestep shift."""

import pytest
import torch

from tessera.data.buckets import BucketConfig, BucketSampler, LatentGroup
from tessera.diffusion.flow import shift_for, shift_time
from tessera.schedulers import time_grid


def _groups():
    """Three aspect ratios at 5 latent frames, one short square group: (C, T', H', W')."""
    shapes = [(5, 16, 16), (5, 16, 28), (5, 28, 16), (3, 16, 16)]
    return [
        LatentGroup(torch.randn(n, 4, *s).to(torch.bfloat16), [[i] for i in range(n)])
        for n, s in zip((10, 7, 6, 3), shapes)
    ]


def test_every_batch_lands_in_a_valid_bucket_within_the_token_budget():
    groups = _groups()
    cfg = BucketConfig(frames=(1, 3, 5), token_budget=2048)
    sampler = BucketSampler(groups, cfg, seed=0)
    seen = set()
    for step in range(300):
        plan = sampler.plan(step)
        group = groups[plan.group]
        t, h, w = group.shape
        b = plan.bucket
        assert (b.height, b.width) == (h, w) and b.frames <= t
        assert len(plan.clips) * b.tokens() <= cfg.token_budget
        assert int(plan.clips.max()) < len(group.latents)
        x = sampler.latents(plan)
        assert x.shape == (len(plan.clips), 4, b.frames, h, w)
        # a cut clip is the start of the clip
        assert torch.equal(x[0], group.latents[plan.clips[0], :, : b.frames].float())
        seen.add((b.frames, h, w))
    # every spatial shape and every length that fits gets drawn
    assert seen == {(f, 16, 16) for f in (1, 3, 5)} | {(f, h, w) for f in (1, 3, 5) for h, w in ((16, 28), (28, 16))}


def test_batch_size_follows_the_token_budget():
    sampler = BucketSampler(_groups(), BucketConfig(frames=(1, 5), token_budget=2048, max_batch=1000), seed=0)
    batches = {(o[0].frames, o[0].height, o[0].width): o[2] for o in sampler.options}
    assert batches[(5, 16, 16)] == 2048 // 320
    assert batches[(1, 16, 16)] == 2048 // 64  # short clips: bigger batches, same tokens
    assert batches[(5, 16, 28)] == 2048 // (5 * 8 * 14)


def test_sampler_is_deterministic_for_a_seed_and_differs_across_seeds():
    a, b, c = (BucketSampler(_groups(), BucketConfig(frames=(1, 3, 5)), seed=s) for s in (3, 3, 4))
    for step in (0, 1, 17, 500):
        pa, pb = a.plan(step), b.plan(step)
        assert pa.bucket == pb.bucket and torch.equal(pa.clips, pb.clips)
        # the step's random stream continues identically (texts, times, noise come from it)
        assert torch.equal(torch.rand(3, generator=pa.generator), torch.rand(3, generator=pb.generator))
    assert any(not torch.equal(a.plan(s).clips, c.plan(s).clips) for s in range(5))


def test_batches_split_evenly_over_processes():
    sampler = BucketSampler(_groups(), BucketConfig(frames=(1, 5), token_budget=4096), seed=0, world_size=4)
    assert all(o[2] % 4 == 0 and o[2] > 0 for o in sampler.options)


def test_clear_errors_for_impossible_buckets():
    with pytest.raises(ValueError, match="no bucket fits"):
        BucketSampler(_groups(), BucketConfig(frames=(9,)), seed=0)
    with pytest.raises(ValueError, match="token budget"):
        BucketSampler(_groups(), BucketConfig(token_budget=100), seed=0)


def test_shift_grows_with_tokens_and_is_shared_by_training_and_sampling():
    assert shift_for(3.0, 320) == 3.0  # constant when no reference is set
    assert shift_for(3.0, 320, 320) == pytest.approx(3.0)
    assert shift_for(3.0, 1280, 320) == pytest.approx(6.0)  # 4x the tokens: 2x the shift
    assert shift_for(3.0, 80, 320) < shift_for(3.0, 320, 320) < shift_for(3.0, 1280, 320)
    # the sampler's time grid is the training map applied to uniform times
    s = shift_for(1.5, 700, 320)
    grid = time_grid(10, s)
    assert torch.allclose(grid, shift_time(torch.linspace(1, 0, 11), s))
    # a bigger shift spends more of the steps at high noise
    assert (time_grid(10, 6.0) > time_grid(10, 1.5)).sum() == 9
