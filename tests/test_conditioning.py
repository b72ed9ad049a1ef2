"""One conditioning mechanism: per-token times in the DiT, mask strategies in training, items in the pipeline."""

import numpy as np
import pytest
import torch

from tessera.conditioning import (
    Condition,
    ConditioningItem,
    MaskConfig,
    encode_items,
    expand_levels,
    sample_levels,
)
from tessera.config import PRESETS
from tessera.diffusion.flow import flow_loss
from tessera.errors import InputError
from tessera.models.dit import DiT
from tessera.pipeline import TesseraPipeline

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return TesseraPipeline.from_single_file(tiny_checkpoint)


def _dit_inputs(dit, b=2, t=3, h=4, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = dit.cfg
    z = torch.randn(b, cfg.in_channels, t, h, w, generator=g)
    tokens = torch.randn(b, 5, cfg.text_dim, generator=g)
    return z, dict(text_tokens=tokens, text_mask=torch.ones(b, 5, dtype=torch.bool), text_pooled=tokens.mean(1))


def _trained_looking_dit(seed=0):
    """A tiny DiT with every weight random (a fresh one outputs zero whatever its inputs)."""
    torch.manual_seed(seed)
    dit = DiT(TINY.dit)
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.2)
    return dit.eval()


def test_per_token_times_equal_one_time_per_clip_when_all_tokens_share_it():
    dit = _trained_looking_dit()
    z, text = _dit_inputs(dit)
    t = torch.tensor([0.3, 0.8])
    n = (z.shape[2] // dit.patch[0]) * (z.shape[3] // dit.patch[1]) * (z.shape[4] // dit.patch[2])
    with torch.no_grad():
        one = dit(z, t, **text)
        per_token = dit(z, t[:, None].expand(-1, n), **text)
    torch.testing.assert_close(per_token, one, atol=1e-5, rtol=1e-5)


def test_a_token_s_time_changes_the_output():
    dit = _trained_looking_dit()
    z, text = _dit_inputs(dit)
    n = (z.shape[2] // dit.patch[0]) * (z.shape[3] // dit.patch[1]) * (z.shape[4] // dit.patch[2])
    t = torch.full((2, n), 0.7)
    t2 = t.clone()
    t2[:, : n // 3] = 0.0  # the first frame's tokens are clean
    with torch.no_grad():
        assert not torch.allclose(dit(z, t, **text), dit(z, t2, **text))


def test_every_mask_strategy_keeps_some_tokens_and_generates_others():
    g = torch.Generator().manual_seed(0)
    grid = (5, 4, 6)
    t = torch.rand(400, generator=g) * 0.9 + 0.05
    levels = sample_levels(grid, t, MaskConfig(), g)
    assert levels.shape == (400, *grid)
    masked = (levels < 1).flatten(1).any(1)
    share = masked.float().mean().item()
    assert abs(share - MaskConfig().total) < 0.08  # the configured share of samples is masked
    for i in torch.nonzero(masked).flatten().tolist():
        kept = levels[i] < 1
        assert (~kept).any(), "every masked sample still has tokens to learn from"
        assert (levels[i][kept] < t[i]).all(), "kept tokens sit below the clip's noise level"
        assert torch.unique(levels[i][kept]).numel() == 1
    partial = [i for i in torch.nonzero(masked).flatten().tolist() if (levels[i][levels[i] < 1] > 0).any()]
    assert 0 < len(partial) < masked.sum()


def test_flow_loss_without_kept_tokens_is_the_plain_loss():
    dit = _trained_looking_dit()
    z, text = _dit_inputs(dit)
    t, noise = torch.tensor([0.4, 0.9]), torch.randn_like(z)
    grid = (z.shape[2], z.shape[3] // 2, z.shape[4] // 2)
    with torch.no_grad():
        plain = flow_loss(dit, z, text, t, noise)
        free = flow_loss(dit, z, text, t, noise, torch.ones(2, *grid), dit.patch)
    torch.testing.assert_close(free, plain, atol=1e-5, rtol=1e-5)


def test_flow_loss_ignores_the_kept_tokens():
    """Changing the target under kept tokens (x0 there) must not change the loss beyond the model's view of it."""
    dit = _trained_looking_dit()
    z, text = _dit_inputs(dit)
    t, noise = torch.tensor([0.5, 0.5]), torch.randn_like(z)
    grid = (z.shape[2], z.shape[3] // 2, z.shape[4] // 2)
    levels = torch.ones(2, *grid)
    levels[:, 0] = 0.0  # the first latent frame is kept
    noise2 = noise.clone()
    noise2[:, :, 0] += 5.0  # the kept frame's noise is never seen (level 0) nor in the loss
    with torch.no_grad():
        a = flow_loss(dit, z, text, t, noise, levels, dit.patch)
        b = flow_loss(dit, z, text, t, noise2, levels, dit.patch)
    torch.testing.assert_close(a, b)


def test_hold_keeps_tokens_on_their_path_until_released():
    x0 = torch.randn(1, 2, 3, 2, 2)
    noise = torch.randn_like(x0)
    levels = torch.ones(1, 1, 3, 2, 2)
    levels[:, :, 0] = 0.0  # kept exactly
    levels[:, :, 1] = 0.6  # held at 0.6, then free
    known = Condition(x0, levels)
    x = torch.zeros_like(x0)
    held = known.hold(x, noise, 0.9, 0.8)
    torch.testing.assert_close(held[:, :, 0], x0[:, :, 0])
    torch.testing.assert_close(held[:, :, 1], 0.4 * x0[:, :, 1] + 0.6 * noise[:, :, 1])
    assert (held[:, :, 2] == 0).all()  # free tokens are the scheduler's
    released = known.hold(x, noise, 0.7, 0.5)  # crosses 0.6: joins the rest at t = 0.5
    torch.testing.assert_close(released[:, :, 1], 0.5 * x0[:, :, 1] + 0.5 * noise[:, :, 1])
    after = known.hold(x, noise, 0.5, 0.3)  # already free
    assert (after[:, :, 1] == 0).all()
    torch.testing.assert_close(after[:, :, 0], x0[:, :, 0])
    times = known.token_times(torch.tensor([0.8]), (1, 2, 2))
    assert times.shape == (1, 3) and times.tolist() == [[0.0, pytest.approx(0.6), pytest.approx(0.8)]]


def _video(frames=9, h=128, w=128, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (frames, h, w, 3), dtype=np.uint8)


def test_an_item_at_the_start_encodes_to_the_clip_s_own_latents(pipe):
    clip = _video(5)
    known = encode_items(pipe.vae, pipe.geometry, [ConditioningItem(clip)], 9, 128, 128)
    x = torch.from_numpy(clip).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        own = pipe.vae.encode(x).float()
    torch.testing.assert_close(known.latents[:, :, :2], own)
    assert (known.levels[:, :, :2] == 0).all() and (known.levels[:, :, 2:] == 1).all()


def test_a_later_item_covers_only_whole_latent_groups(pipe):
    # 9 output frames = latents [0], [1-4], [5-8]; an item on frames 3..8 covers only latent 2 whole
    known = encode_items(pipe.vae, pipe.geometry, [ConditioningItem(_video(6), start=3)], 9, 128, 128)
    assert known.levels[0, 0, :, 0, 0].tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(InputError, match="covers no whole latent frame"):
        encode_items(pipe.vae, pipe.geometry, [ConditioningItem(_video(2), start=2)], 9, 128, 128)


def test_an_image_at_the_end_holds_the_last_latent_frame(pipe):
    known = encode_items(pipe.vae, pipe.geometry, [ConditioningItem(_video(1), start=8)], 9, 128, 128)
    assert known.levels[0, 0, :, 0, 0].tolist() == [1.0, 1.0, 0.0]


def test_a_keep_mask_frees_whole_tokens_inside_the_box(pipe):
    keep = np.ones((9, 128, 128), dtype=bool)
    keep[:, 40:90, 40:90] = False  # snapped out to the token grid (32 px tokens): rows/cols 32..96
    known = encode_items(pipe.vae, pipe.geometry, [ConditioningItem(_video(9), keep=keep)], 9, 128, 128)
    token = pipe.vae.spatial_factor * pipe.transformer.patch[1]
    free = known.levels[0, 0, 0] == 1  # (H', W')
    expected = torch.zeros_like(free)
    cell = lambda px: px // pipe.vae.spatial_factor  # noqa: E731
    expected[cell(40 // token * token) : cell(-(-90 // token) * token), cell(32) : cell(96)] = True
    assert torch.equal(free, expected)


def test_bad_items_are_refused_before_any_compute():
    with pytest.raises(InputError, match="uint8"):
        ConditioningItem(np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(InputError, match="strength"):
        ConditioningItem(_video(1, 8, 8), strength=0.0)
    with pytest.raises(InputError, match="keep mask"):
        ConditioningItem(_video(2, 8, 8), keep=np.ones((1, 8, 8), dtype=bool))


def test_kept_tokens_end_exactly_at_the_item_s_latents(pipe):
    clip = _video(5)
    out = pipe(
        "a red circle", seed=3, num_inference_steps=3, width=128, height=128, duration_s=1.0,
        output_type="latent", conditioning=[ConditioningItem(clip)],
    )  # fmt: skip
    known = encode_items(pipe.vae, pipe.geometry, [ConditioningItem(clip)], 9, 128, 128)
    torch.testing.assert_close(out.latents[:, :2], known.latents[0, :, :2])
    free = pipe("a red circle", seed=3, num_inference_steps=3, width=128, height=128, duration_s=1.0,
                output_type="latent")  # fmt: skip
    assert not torch.allclose(out.latents[:, 2:], free.latents[:, 2:])


def test_a_partial_strength_everywhere_starts_from_the_noised_input(pipe):
    """Restyle: strength 0.3 holds every token at noise 0.7; the model is skipped until t <= 0.7."""
    clip = _video(9)
    calls = []
    out = pipe(
        "a blue square", seed=0, num_inference_steps=10, width=128, height=128, duration_s=1.0,
        output_type="latent", conditioning=[ConditioningItem(clip, strength=0.3)],
        callback=lambda i, n: calls.append(i),
    )  # fmt: skip
    assert len(calls) == 10 and out.latents.isfinite().all()


def test_expand_levels_repeats_each_token_over_its_cells():
    levels = torch.tensor([[[[0.0, 1.0]]]])  # (B=1, T=1, H=1, W=2) tokens
    assert expand_levels(levels, (1, 2, 2)).shape == (1, 1, 1, 2, 4)
