"""Invariants of the architecture: patchify, VAE causality, DiT initialisation, flow loss."""

import pytest
import torch

from tessera.config import DiTConfig, VAEConfig
from tessera.diffusion.flow import flow_loss, sample_train_times, shift_time
from tessera.models.dit import DiT
from tessera.models.patchify import grid_positions, patchify, unpatchify
from tessera.models.vae import VideoVAE


@pytest.mark.parametrize(
    "shape,patch",
    [
        ((2, 16, 5, 16, 16), (1, 2, 2)),
        ((1, 8, 4, 6, 10), (2, 2, 2)),
        ((3, 4, 1, 8, 4), (1, 4, 2)),
        ((1, 3, 6, 9, 3), (3, 3, 1)),
    ],
)
def test_patchify_round_trip_exact(shape, patch):
    z = torch.randn(shape)
    tokens = patchify(z, patch)
    b, c, t, h, w = shape
    grid = (t // patch[0], h // patch[1], w // patch[2])
    assert tokens.shape == (b, grid[0] * grid[1] * grid[2], c * patch[0] * patch[1] * patch[2])
    assert torch.equal(unpatchify(tokens, grid, patch), z)


def test_patch_token_holds_its_block_and_position():
    z = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 1, 2, 4, 4)
    tokens = patchify(z, (1, 2, 2))
    pos = grid_positions((2, 2, 2))
    # token 5 is t=1, y=0, x=1: the 2×2 block at rows 0-1, cols 2-3 of frame 1
    assert pos[5].tolist() == [1.0, 0.0, 1.0]
    assert tokens[0, 5].tolist() == z[0, 0, 1, 0:2, 2:4].flatten().tolist()


def test_patchify_rejects_indivisible():
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.randn(1, 4, 3, 8, 8), (2, 2, 2))


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VideoVAE(VAEConfig(latent_channels=8, base_channels=16)).eval()


def test_vae_shapes_and_factors(vae):
    x = torch.randn(2, 3, 9, 64, 48)
    z = vae.encode(x)
    assert z.shape == (2, 8, 3, 4, 3)
    assert vae.decode(z).shape == x.shape


def test_vae_is_causal(vae):
    x = torch.randn(1, 3, 17, 32, 32)
    base = vae.encode(x)
    for k in (1, 4, 5, 9, 16):
        x2 = x.clone()
        x2[:, :, k] += 1.0
        z2 = vae.encode(x2)
        first_affected = (k + 3) // 4  # latent j covers frames 4j-3 .. 4j
        assert torch.equal(z2[:, :, :first_affected], base[:, :, :first_affected]), k
        assert not torch.allclose(z2[:, :, first_affected], base[:, :, first_affected])
    # and the decoder: changing latent j leaves frames before 4j - 3 untouched
    y = vae.decode(base)
    z3 = base.clone()
    z3[:, :, 2] += 1.0
    y3 = vae.decode(z3)
    assert torch.equal(y3[:, :, :5], y[:, :, :5])
    assert not torch.allclose(y3[:, :, 5], y[:, :, 5])


def test_single_image_is_a_one_frame_video(vae):
    x = torch.randn(1, 3, 9, 32, 32)
    z_img = vae.encode(x[:, :, :1])
    assert z_img.shape[2] == 1
    assert torch.allclose(z_img, vae.encode(x)[:, :, :1], atol=1e-5)
    assert vae.decode(z_img).shape == (1, 3, 1, 32, 32)


def test_vae_size_errors_name_a_fix(vae):
    with pytest.raises(ValueError, match="try 48"):
        vae.encode(torch.randn(1, 3, 1, 50, 32))
    with pytest.raises(ValueError, match="try 9"):
        vae.encode(torch.randn(1, 3, 8, 32, 32))


def _cond(b, seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "text_tokens": torch.randn(b, 7, 32, generator=g),
        "text_mask": torch.ones(b, 7, dtype=torch.bool),
        "text_pooled": torch.randn(b, 32, generator=g),
    }


def test_dit_shape_and_zero_init_ignores_text():
    dit = DiT(DiTConfig(in_channels=8, width=64, depth=2, heads=2, text_dim=32))
    z = torch.randn(2, 8, 3, 8, 6)
    t = torch.tensor([0.3, 0.9])
    out_a = dit(z, t, **_cond(2, 1))
    out_b = dit(z, t, **_cond(2, 2))
    assert out_a.shape == z.shape
    assert torch.equal(out_a, out_b)  # a fresh DiT is the same whatever the prompt


def test_dit_attention_is_global_and_uses_text():
    dit = DiT(DiTConfig(in_channels=4, width=64, depth=2, heads=2, text_dim=32))
    for p in dit.parameters():  # leave the zero-init regime
        torch.nn.init.normal_(p, std=0.05)
    z = torch.randn(1, 4, 3, 4, 4)
    t = torch.tensor([0.5])
    base = dit(z, t, **_cond(1, 1))
    z2 = z.clone()
    z2[:, :, 2, 3, 3] += 1.0  # last frame, last position
    out2 = dit(z2, t, **_cond(1, 1))
    assert not torch.allclose(out2[:, :, 0, :2, :2], base[:, :, 0, :2, :2])  # reaches the first frame
    assert not torch.allclose(dit(z, t, **_cond(1, 2)), base)


def test_math_and_sdpa_attention_agree():
    cfg = DiTConfig(in_channels=4, width=64, depth=1, heads=2, text_dim=32)
    dit = DiT(cfg).set_attention_backend("math")
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.05)
    z, t = torch.randn(2, 4, 2, 4, 4), torch.tensor([0.2, 0.7])
    cond = _cond(2, 3)
    cond["text_mask"][1, 4:] = False
    a = dit(z, t, **cond)
    dit.set_attention_backend("sdpa")
    assert torch.allclose(a, dit(z, t, **cond), atol=1e-5)


def test_flow_loss_falls_when_overfitting():
    torch.manual_seed(0)
    dit = DiT(DiTConfig(in_channels=4, width=64, depth=2, heads=2, text_dim=32))
    opt = torch.optim.AdamW(dit.parameters(), lr=2e-3)
    x0 = torch.randn(4, 4, 2, 4, 4)
    cond = _cond(4, 0)
    g = torch.Generator().manual_seed(0)
    t, noise = sample_train_times(4, 1.0, g), torch.randn(x0.shape, generator=g)
    first = flow_loss(dit, x0, cond, t, noise).item()
    for _ in range(60):
        loss = flow_loss(dit, x0, cond, t, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_time_shift_is_monotone_and_fixes_ends():
    t = torch.linspace(0, 1, 11)
    s = shift_time(t, 3.0)
    assert s[0] == 0 and s[-1] == 1
    assert torch.all(s[1:] > s[:-1]) and torch.all(s[1:-1] > t[1:-1])
