"""VAE invariants beyond shapes: chunked = whole in time, tiled ≈ untiled, the backend interface, metrics."""

import dataclasses
import json

import pytest
import torch

from tessera import checkpoint
from tessera.config import PRESETS
from tessera.data.world import WorldConfig, frames_to_tensor, world_clip
from tessera.losses import ExtraVAELoss, VAELossConfig
from tessera.metrics import psnr, ssim
from tessera.models.autoencoder import DiffusersVAE, VideoAutoencoder, load_video_vae
from tessera.models.tiling import TiledVAE, TilingConfig, chunked_decode_raw, chunked_encode_raw, tiled_decode
from tessera.models.vae import VideoVAE
from tessera.training import VAETrainConfig, train_vae


@pytest.fixture(scope="module")
def tiny_vae():
    torch.manual_seed(0)
    return VideoVAE(PRESETS["tiny"].vae).eval()


@pytest.fixture(scope="module")
def bundled():
    return load_video_vae()


def clips(seed: int, n: int, frames: int, h: int, w: int, pan_fraction: float) -> torch.Tensor:
    cfg = WorldConfig(seed=seed, pan_fraction=pan_fraction)
    return torch.stack([frames_to_tensor(world_clip(seed, i, frames, h, w, cfg)[0]) for i in range(n)])


# ----------------------------------------------------------------------------- time chunks


@torch.no_grad()
def test_chunked_encode_equals_whole_and_is_causal(tiny_vae):
    x = torch.rand(1, 3, 13, 32, 48) * 2 - 1
    whole, _ = tiny_vae.encode_moments(x)
    chunked = chunked_encode_raw(tiny_vae, x, chunk_latent_frames=1)  # chunks: frame 0, then 4 frames at a time
    assert chunked.shape == whole.shape == (1, 8, 4, 2, 3)
    assert torch.allclose(chunked, whole, atol=1e-4)
    x2 = x.clone()
    x2[:, :, 9:] = torch.rand_like(x2[:, :, 9:])  # frames 9..12 belong to latent frame 3 only
    changed = chunked_encode_raw(tiny_vae, x2, chunk_latent_frames=2)
    assert torch.allclose(changed[:, :, :3], whole[:, :, :3], atol=1e-4)
    assert not torch.allclose(changed[:, :, 3], whole[:, :, 3], atol=1e-3)


@torch.no_grad()
def test_chunked_decode_equals_whole(tiny_vae):
    z = torch.randn(1, 8, 4, 3, 2)
    whole = tiny_vae.decoder(z)
    for chunk in (1, 2, 5):
        assert torch.allclose(chunked_decode_raw(tiny_vae, z, chunk), whole, atol=1e-4)


@torch.no_grad()
def test_image_is_a_one_frame_video_when_tiled(tiny_vae):
    x = torch.rand(1, 3, 5, 48, 64) * 2 - 1
    tiled = TiledVAE(tiny_vae, TilingConfig(tile_latent=2, overlap_latent=1, chunk_latent_frames=1))
    z_img = tiled.encode(x[:, :, :1])
    assert z_img.shape == (1, 8, 1, 3, 4)
    assert torch.allclose(z_img, tiled.encode(x)[:, :, :1], atol=1e-4)
    assert tiled.decode(z_img).shape == (1, 3, 1, 48, 64)


# ----------------------------------------------------------------------------- space tiles (bundled VAE)


@torch.no_grad()
def test_tiled_matches_untiled_without_seams(bundled):
    """96×128×5 with 64-px tiles: a 2×3 grid of tiles and 2 time chunks, seams in both directions blended."""
    x = clips(777, 1, 5, 96, 128, pan_fraction=0.5)
    tiled = TiledVAE(bundled, TilingConfig(tile_latent=4, overlap_latent=2, chunk_latent_frames=1))
    z, zt = bundled.encode(x), tiled.encode(x)
    y = bundled.decode(z)
    assert psnr(tiled.decode(z), y).item() >= 40.0
    assert psnr(bundled.decode(zt), y).item() >= 40.0


@torch.no_grad()
def test_tiled_decode_any_aspect_and_frame_count(tiny_vae):
    cfg = TilingConfig(tile_latent=3, overlap_latent=1, chunk_latent_frames=2)
    for t, h, w in ((1, 1, 7), (2, 5, 1), (4, 4, 9)):
        y = tiled_decode(tiny_vae, torch.randn(1, 8, t, h, w), cfg)
        assert y.shape == (1, 3, 1 + 4 * (t - 1), 16 * h, 16 * w)
        assert torch.isfinite(y).all()


@torch.no_grad()
def test_bundled_latents_are_normalised(bundled):
    """Per-channel statistics on held-out world clips (10% pans, as at training) stay near N(0, 1).

    Six small clips give noisy channel means (measured: mean |mean| 0.22, worst 0.73), so the
    bounds are loose; the raw latents break them (channel std up to 3.6, means up to 1.4).
    """
    z = bundled.encode(clips(4242, 6, 9, 128, 128, pan_fraction=0.1))
    mean, std = z.mean(dim=(0, 2, 3, 4)), z.std(dim=(0, 2, 3, 4))
    msg = f"channel means {mean}, stds {std}"
    assert mean.abs().max().item() < 1.0 and mean.abs().mean().item() < 0.35, msg
    assert 0.3 < std.min().item() and std.max().item() < 2.0 and 0.6 < std.mean().item() < 1.4, msg


# ----------------------------------------------------------------------------- backends


def test_backends_share_one_interface(tiny_vae):
    assert isinstance(tiny_vae, VideoAutoencoder)
    assert isinstance(TiledVAE(tiny_vae), VideoAutoencoder)
    assert (tiny_vae.spatial_factor, tiny_vae.temporal_factor, tiny_vae.latent_channels) == (16, 4, 8)


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = diffusers.AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[True, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[2.0, 0.5, 1.0, 4.0],
        scale_factor_spatial=4,
    )
    folder = tmp_path_factory.mktemp("wan")
    model.save_pretrained(folder)
    return folder


@torch.no_grad()
def test_diffusers_vae_round_trip(wan_folder):
    vae = DiffusersVAE.from_folder(wan_folder)
    assert isinstance(vae, VideoAutoencoder)
    assert (vae.spatial_factor, vae.temporal_factor, vae.latent_channels) == (4, 4, 4)
    x = torch.rand(1, 3, 9, 16, 24) * 2 - 1
    z = vae.encode(x)
    assert z.shape == (1, 4, 3, 4, 6)
    raw = vae.model.encode(x).latent_dist.mean
    mean = torch.tensor([0.1, -0.2, 0.3, 0.0]).view(1, -1, 1, 1, 1)
    std = torch.tensor([2.0, 0.5, 1.0, 4.0]).view(1, -1, 1, 1, 1)
    assert torch.allclose(z, (raw - mean) / std, atol=1e-5)  # the config's statistics are applied
    assert torch.allclose(vae.decode(z), vae.model.decode(raw).sample, atol=1e-5)  # and undone
    assert vae.decode(z).shape == x.shape
    assert vae.decode(vae.encode(x[:, :, :1])).shape == (1, 3, 1, 16, 24)
    with pytest.raises(ValueError, match="1 \\+ k × 4; try 9"):
        vae.encode(x[:, :, :8])


def test_diffusers_vae_refuses_unknown_class(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ValueError, match="AutoencoderKLWan"):
        DiffusersVAE.from_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        DiffusersVAE.from_folder(tmp_path / "missing")


# ----------------------------------------------------------------------------- metrics and loss terms


def test_ssim_and_psnr_properties():
    x = torch.rand(2, 3, 2, 32, 32) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    scores, dbs = [], []
    for sigma in (0.02, 0.1, 0.3, 0.8):
        noisy = (x + sigma * torch.randn_like(x)).clamp(-1, 1)
        scores.append(ssim(x, noisy).mean().item())
        dbs.append(psnr(x, noisy).mean().item())
    assert scores == sorted(scores, reverse=True) and scores[-1] < 0.5
    assert dbs == sorted(dbs, reverse=True)
    assert abs(psnr(x, x + 0.02).mean().item() - 10 * torch.log10(torch.tensor(4 / 0.02**2)).item()) < 0.01


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    a = torch.rand(1, 3, 2, 24, 40) * 2 - 1
    b = (a + 0.3 * torch.randn_like(a)).clamp(-1, 1)
    ref = [
        metrics.structural_similarity(
            a[0, c, t].numpy(),
            b[0, c, t].numpy(),
            data_range=2.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for c in range(3)
        for t in range(2)
    ]
    assert abs(ssim(a, b).item() - sum(ref) / len(ref)) < 1e-4


def test_discriminator_learns_real_from_fake():
    torch.manual_seed(0)
    extra = ExtraVAELoss(VAELossConfig(adv_weight=0.1, adv_start_step=2, disc_channels=8, disc_lr=2e-3), bf16=False)
    real = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    fake = torch.zeros_like(real)  # flat grey: easy to tell apart
    assert extra.discriminator_step(real, fake, step=0) == {}  # not started yet
    first = extra.discriminator_step(real, fake, step=2)["d_hinge"]
    for _ in range(15):
        last = extra.discriminator_step(real, fake, step=3)["d_hinge"]
    assert last < 0.5 * first
    total, parts = extra.generator_terms(real, fake, step=3)
    assert total.item() > 0 and "g_adv" in parts
    state = extra.state_tensors()
    fresh = ExtraVAELoss(extra.cfg, bf16=False)
    fresh.load_state_tensors(state)
    assert torch.equal(fresh.disc(real), extra.disc(real))


def test_train_vae_with_extra_terms_logs_and_resumes(tmp_path):
    """The SSIM and adversarial terms reach the log and the discriminator survives a stop / resume."""
    vae_cfg = PRESETS["tiny"].vae
    cfg = VAETrainConfig(steps=3, batch=1, warmup_steps=1, log_every=1, checkpoint_every=100, frames=5, size_px=32)
    extra = VAELossConfig(ssim_weight=0.5, adv_weight=0.1, adv_start_step=1, disc_channels=8)
    out = tmp_path / "run"
    train_vae(out, vae_cfg, dataclasses.replace(cfg, stop_at=1), extra_loss=extra)
    state, _, _ = checkpoint.load(out / "state.safetensors")
    assert any(k.startswith("disc.") for k in state)  # saved before the discriminator starts, too
    train_vae(out, vae_cfg, dataclasses.replace(cfg, stop_at=2), extra_loss=extra)
    state, _, _ = checkpoint.load(out / "state.safetensors")
    assert any(k.startswith("disc_opt.") for k in state)  # its optimiser state after its first step
    rows = [json.loads(line) for line in (out / "vae_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1]
    assert all("ssim" in r for r in rows) and "d_hinge" not in rows[0] and "d_hinge" in rows[1]


# ----------------------------------------------------------------------------- decoder fine-tuning


def test_refine_blocks_start_as_the_identity(tiny_vae):
    """Refine blocks added to a trained decoder change nothing until they are trained."""
    cfg = dataclasses.replace(tiny_vae.cfg, decoder_refine_blocks=2)
    grown = VideoVAE(cfg).eval()
    missing, unexpected = grown.load_state_dict(tiny_vae.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("decoder.refine.") for k in missing)
    z = torch.randn(1, cfg.latent_channels, 2, 4, 4)
    with torch.no_grad():
        assert torch.equal(grown.decode(z), tiny_vae.decode(z))


def test_decoder_fine_tune_keeps_the_latent_space(tmp_path):
    """`decoder_from` trains the decoder only; encoder, latent statistics and the DiT of a
    generation checkpoint stay bit-identical, so a DiT trained on the old latents still fits."""
    from tessera.models.dit import DiT
    from tessera.training import generator_tensors, replace_vae

    tiny = PRESETS["tiny"]
    cfg = VAETrainConfig(steps=2, batch=1, warmup_steps=1, checkpoint_every=100, frames=5, size_px=32)
    base_path = train_vae(tmp_path / "base", tiny.vae, cfg)
    base = load_video_vae(base_path)
    grown_cfg = dataclasses.replace(tiny.vae, decoder_refine_blocks=1)
    tuned_path = train_vae(tmp_path / "tuned", grown_cfg, dataclasses.replace(cfg, decoder_from=str(base_path)))
    tuned = load_video_vae(tuned_path)
    assert tuned.cfg.decoder_refine_blocks == 1
    old, new = base.state_dict(), tuned.state_dict()
    for k, v in old.items():
        if k.startswith(("encoder.", "latent_")):
            assert torch.equal(v, new[k]), k
    assert any(not torch.equal(v, new[k]) for k, v in old.items() if k.startswith("decoder."))

    torch.manual_seed(0)
    dit = DiT(dataclasses.replace(tiny.dit, in_channels=tiny.vae.latent_channels))
    gen = tmp_path / "gen.safetensors"
    checkpoint.save(gen, generator_tensors(base, dit), dataclasses.asdict(tiny), kind="generator", name="t")
    swapped = tmp_path / "swapped.safetensors"
    replace_vae(gen, tuned_path, swapped)
    before, _, _ = checkpoint.load(gen)
    after, config, meta = checkpoint.load(swapped)
    assert meta["kind"] == "generator" and config["vae"]["decoder_refine_blocks"] == 1
    assert all(torch.equal(v, after[k]) for k, v in before.items() if k.startswith(("dit.", "vae.encoder.")))
    assert load_video_vae(swapped).cfg == tuned.cfg
    with pytest.raises(checkpoint.CheckpointError, match="not a generation checkpoint"):
        replace_vae(tuned_path, tuned_path, tmp_path / "bad.safetensors")


def test_int8_kernels_round_trip_through_a_checkpoint(tiny_vae, tmp_path):
    """A VAE stored with int8 kernels (one scale per output channel) loads as float weights close to the original."""
    from tessera import checkpoint

    sd = {k: v.clone() for k, v in tiny_vae.state_dict().items()}
    packed = checkpoint.pack_int8(sd, convolutions=True)
    assert any(v.dtype == torch.int8 and v.dim() == 5 for v in packed.values())  # 3D kernels packed
    path = tmp_path / "vae.safetensors"
    checkpoint.save(path, packed, dataclasses.asdict(tiny_vae.cfg), kind="vae", weights="int8")
    loaded = load_video_vae(path)
    for k, v in sd.items():
        got = loaded.state_dict()[k]
        assert got.shape == v.shape, k
        assert (got - v).abs().max() <= v.abs().max() / 127 + 1e-2 * v.abs().max(), k  # int8 or bf16 rounding
