"""Training loops: a run interrupted and resumed ends with the same weights as a straight run."""

import dataclasses
import json
import logging

import pytest
import torch

from tessera import checkpoint
from tessera.config import PRESETS
from tessera.errors import InputError
from tessera.training import DiTTrainConfig, MetricsLog, VAETrainConfig, train_dit, train_vae

TINY = PRESETS["tiny"]


def _weights(path, prefix=None):
    tensors, _, _ = checkpoint.load(path)
    return checkpoint.split_prefix(tensors, prefix) if prefix else tensors


def test_vae_resume_matches_straight_run(tmp_path):
    cfg = VAETrainConfig(
        steps=4, batch=2, lr=1e-3, warmup_steps=1, checkpoint_every=10, log_every=1, frames=5, size_px=32
    )
    straight = train_vae(tmp_path / "a", TINY.vae, cfg)
    train_vae(tmp_path / "b", TINY.vae, dataclasses.replace(cfg, stop_at=2))
    assert not (tmp_path / "b" / "vae.safetensors").exists()
    resumed = train_vae(tmp_path / "b", TINY.vae, cfg)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # latent statistics were measured on training clips and stored with the weights
    assert not torch.equal(a["latent_std"], torch.ones_like(a["latent_std"]))


def test_dit_resume_matches_straight_run(tmp_path):
    vae_path = train_vae(
        tmp_path / "vae", TINY.vae, VAETrainConfig(steps=1, batch=1, warmup_steps=1, frames=5, size_px=32)
    )
    cfg = DiTTrainConfig(
        steps=4,
        batch=2,
        warmup_steps=1,
        checkpoint_every=10,
        clips=6,
        frames=5,
        height_px=32,
        width_px=64,
        eval_every=0,
        peak_tflops=1.0,  # skip measuring the matmul peak
    )
    straight = train_dit(tmp_path / "a", dataclasses.replace(TINY), vae_path, cfg)
    train_dit(tmp_path / "b", dataclasses.replace(TINY), vae_path, dataclasses.replace(cfg, stop_at=2))
    resumed = train_dit(tmp_path / "b", dataclasses.replace(TINY), vae_path, cfg)
    a, b = _weights(straight, "dit"), _weights(resumed, "dit")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses = [checkpoint.load(p)[2]["steps"] for p in (straight, resumed)]
    assert losses == ["4", "4"]


def test_a_state_of_another_model_is_refused_and_changed_settings_are_logged(tmp_path, caplog):
    vae_path = train_vae(
        tmp_path / "vae", TINY.vae, VAETrainConfig(steps=1, batch=1, warmup_steps=1, frames=5, size_px=32)
    )
    cfg = DiTTrainConfig(
        steps=4, batch=2, warmup_steps=1, clips=6, frames=5, height_px=32, width_px=64, eval_every=0,
        peak_tflops=1.0, stop_at=2,
    )  # fmt: skip
    train_dit(tmp_path / "a", dataclasses.replace(TINY), vae_path, cfg)
    wider = dataclasses.replace(TINY, dit=dataclasses.replace(TINY.dit, width=2 * TINY.dit.width))
    with pytest.raises(InputError, match=r"another model \(model\.dit\.width 64 -> 128\).*new --out"):
        train_dit(tmp_path / "a", wider, vae_path, cfg)
    with caplog.at_level(logging.WARNING, logger="tessera"):
        train_dit(tmp_path / "a", dataclasses.replace(TINY), vae_path, dataclasses.replace(cfg, lr=5e-5, stop_at=3))
    assert "changed training settings: lr 0.0008 -> 5e-05" in caplog.text and "stop_at" not in caplog.text


def test_dit_can_continue_from_a_generation_checkpoint(tmp_path):
    vae_path = train_vae(
        tmp_path / "vae", TINY.vae, VAETrainConfig(steps=1, batch=1, warmup_steps=1, frames=5, size_px=32)
    )
    cfg = DiTTrainConfig(
        steps=2, batch=2, warmup_steps=1, clips=4, frames=5, height_px=32, width_px=32, eval_every=0, peak_tflops=1.0
    )
    first = train_dit(tmp_path / "a", dataclasses.replace(TINY), vae_path, cfg)
    # lr 0: a continued run must start from, and so end at, the given weights
    cont = dataclasses.replace(cfg, steps=1, lr=0.0, init_from=str(first))
    second = train_dit(tmp_path / "b", dataclasses.replace(TINY), vae_path, cont)
    a, b = _weights(first, "dit"), _weights(second, "dit")
    assert any(a[k].abs().sum() > 0 for k in ("final.weight", "mod.1.weight"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_log_mirrors_numbers_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLog(tmp_path / "log.jsonl", tmp_path / "tb")
    log.write(step=0, loss=0.5, bucket=[5, 16, 16], lr=1e-3)
    log.write(step=10, loss=0.25, lr=2e-3)
    log.write(step=10, eval={"n": 16, "colour": 0.75})
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows[0]["bucket"] == [5, 16, 16] and rows[2]["eval"]["colour"] == 0.75
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"loss", "lr", "eval/n", "eval/colour"}
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(0, 0.5), (10, 0.25)]
    assert events.Scalars("eval/colour")[0].value == 0.75


def test_fit_steps_keeps_the_run_inside_its_time_limit():
    from tessera.training import fit_steps

    cfg = DiTTrainConfig(steps=1000, time_limit_s=100.0)
    # 95 s usable, 20 s gone: 75 s more at 0.5 s/step is 150 steps after step 50
    assert fit_steps(cfg, 50, elapsed_s=20.0, s_per_step=0.5) == 200
    assert fit_steps(cfg, 50, elapsed_s=20.0, s_per_step=0.01) == 1000  # never more than asked for
    assert fit_steps(cfg, 50, elapsed_s=200.0, s_per_step=0.5) == 50  # over budget: stop now


def test_time_limited_run_stops_and_resumes_at_its_fixed_step_count(tmp_path):
    vae_path = train_vae(
        tmp_path / "vae", TINY.vae, VAETrainConfig(steps=1, batch=1, warmup_steps=1, frames=5, size_px=32)
    )
    cfg = DiTTrainConfig(
        steps=500, batch=1, warmup_steps=60, checkpoint_every=1000, clips=2, frames=1, height_px=32, width_px=32,
        eval_every=0, peak_tflops=1.0, time_limit_s=1e-3,
    )  # fmt: skip
    final = train_dit(tmp_path / "a", dataclasses.replace(TINY), vae_path, cfg)
    assert checkpoint.load(final)[2]["steps"] == "50"  # the budget was spent before timing ended
    again = train_dit(tmp_path / "a", dataclasses.replace(TINY), vae_path, dataclasses.replace(cfg, steps=500))
    assert checkpoint.load(again)[2]["steps"] == "50"  # resuming keeps the step count fixed at the start
    with pytest.raises(ValueError, match="warmup"):
        train_dit(tmp_path / "b", dataclasses.replace(TINY), vae_path, dataclasses.replace(cfg, warmup_steps=10))


def test_latent_cache_does_not_depend_on_the_number_of_render_workers(tmp_path):
    from tessera.data.world import WorldConfig, build_latent_cache
    from tessera.models.vae import VideoVAE

    torch.manual_seed(0)
    vae = VideoVAE(TINY.vae).eval()
    world = WorldConfig(seed=3)
    one = build_latent_cache(vae, tmp_path / "one", 5, 5, 32, 64, world, clips_per_shard=3, batch=2)
    two = build_latent_cache(vae, tmp_path / "two", 5, 5, 32, 64, world, clips_per_shard=3, batch=2, workers=2)
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        (ta, _, ma), (tb, _, mb) = checkpoint.load(a), checkpoint.load(b)
        assert torch.equal(ta["latents"], tb["latents"]) and ma["texts"] == mb["texts"]


def test_a_latent_cache_of_other_settings_or_another_vae_is_encoded_again(tmp_path, caplog):
    import dataclasses as dc

    from tessera.data.world import WorldConfig, build_latent_cache
    from tessera.models.vae import VideoVAE

    torch.manual_seed(0)
    vae = VideoVAE(TINY.vae).eval()
    world = WorldConfig(seed=3)

    def build(v, w):
        return build_latent_cache(v, tmp_path / "c", 3, 5, 32, 64, w, clips_per_shard=3, batch=3)

    def shard():
        tensors, config, meta = checkpoint.load(tmp_path / "c" / "shard_00000.safetensors")
        return tensors["latents"], config, meta["texts"]

    build(vae, world)
    first = shard()
    with caplog.at_level(logging.INFO, logger="tessera"):
        build(vae, world)  # the same clips and VAE: kept
        assert "encoding it again" not in caplog.text
        build(vae, dc.replace(world, wording="full"))  # other captions: made again
        assert "encoding it again" in caplog.text and shard()[2] != first[2]
        other = VideoVAE(TINY.vae).eval()  # another VAE's latents would not fit the decoder
        build(other, world)
    latents, config, texts = shard()
    assert texts == first[2] and not torch.equal(latents, first[0]) and config["vae_sha256"] != first[1]["vae_sha256"]


def test_the_latent_cache_holds_only_this_runs_clips_and_shapes(tmp_path):
    """Everything under the cache is trained on, so shards of an earlier run with more clips or other
    shapes are removed when the cache is built again."""
    from tessera.data.shards import load_latent_groups
    from tessera.data.world import WorldConfig, build_latent_cache
    from tessera.models.vae import VideoVAE
    from tessera.training.dit import world_latents

    vae = VideoVAE(TINY.vae).eval()
    build_latent_cache(vae, tmp_path / "c", 6, 5, 32, 64, WorldConfig(), clips_per_shard=3, batch=3)
    build_latent_cache(vae, tmp_path / "c", 3, 5, 32, 64, WorldConfig(), clips_per_shard=3, batch=3)
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["shard_00000.safetensors"]
    cfg = DiTTrainConfig(clips=4, frames=5, shapes=((32, 64), (64, 32)))
    root = world_latents(vae, tmp_path / "run", cfg)
    assert sorted(p.name for p in root.iterdir()) == ["32x64", "64x32"]
    world_latents(vae, tmp_path / "run", dataclasses.replace(cfg, shapes=((32, 32),)))  # one shape now
    assert [p.name for p in root.iterdir()] == ["shard_00000.safetensors"]
    assert [g[0].shape[0] for g in load_latent_groups(root)] == [4]
    world_latents(vae, tmp_path / "run", cfg)  # two shapes again
    assert sorted(p.name for p in root.iterdir()) == ["32x64", "64x32"]
    assert sorted(g[0].shape[0] for g in load_latent_groups(root)) == [2, 2]


@pytest.mark.slow
def test_dit_quick_eval_judges_the_ema_weights_through_the_pipeline(tmp_path):
    """An adherence check during training writes its scores to the log, and its videos stay out of the user's ledger."""
    vae_path = train_vae(
        tmp_path / "vae", TINY.vae, VAETrainConfig(steps=1, batch=1, warmup_steps=1, frames=5, size_px=32)
    )
    cfg = DiTTrainConfig(
        steps=1, batch=1, warmup_steps=1, clips=2, frames=5, height_px=32, width_px=32, peak_tflops=1.0,
        eval_every=1, eval_prompts=2, eval_steps=1,
    )  # fmt: skip
    small = dataclasses.replace(TINY, height_px=128, width_px=128, duration_s=1.0)  # the size the check generates
    train_dit(tmp_path / "a", small, vae_path, cfg)
    rows = [json.loads(line) for line in (tmp_path / "a" / "dit_log.jsonl").read_text().splitlines()]
    scores = [r["eval"] for r in rows if "eval" in r]
    assert len(scores) == 1 and scores[0]["n"] == 2 and 0 <= scores[0]["colour"] <= 1, scores
    from tessera.safety.ledger import Ledger

    assert len(Ledger(tmp_path / "a" / "eval_ledger.sqlite3").entries()) == 2  # the run's own ledger, not the user's


def test_vae_time_limit_workers_and_init_from(tmp_path):
    """A time-limited VAE run fixes its step count after timing and keeps it when resumed; clips rendered by
    worker processes are the same steps' clips; --vae-init-from starts from a checkpoint's weights."""
    cfg = VAETrainConfig(
        steps=500, batch=1, warmup_steps=60, checkpoint_every=1000, frames=5, size_px=32, time_limit_s=1e-3
    )
    final = train_vae(tmp_path / "a", TINY.vae, cfg)
    assert checkpoint.load(final)[2]["steps"] == "50"  # the budget was spent before timing ended
    assert checkpoint.load(train_vae(tmp_path / "a", TINY.vae, cfg))[2]["steps"] == "50"  # resumed: still 50
    with pytest.raises(ValueError, match="warmup"):
        train_vae(tmp_path / "b", TINY.vae, dataclasses.replace(cfg, warmup_steps=10))

    short = VAETrainConfig(steps=3, batch=1, warmup_steps=1, checkpoint_every=100, frames=5, size_px=32)
    inline = _weights(train_vae(tmp_path / "w0", TINY.vae, short))
    rendered = _weights(train_vae(tmp_path / "w1", TINY.vae, dataclasses.replace(short, workers=1)))
    for k in inline:
        assert torch.equal(inline[k], rendered[k]), k

    from tessera.training.vae import build_vae

    grown = build_vae(TINY.vae, init_from=str(final))
    for k, v in _weights(final).items():
        assert torch.equal(grown.state_dict()[k], v), k
    assert grown.training and all(p.requires_grad for p in grown.parameters())
    with pytest.raises(ValueError, match="config"):
        build_vae(dataclasses.replace(TINY.vae, latent_channels=4), init_from=str(final))


def test_footage_preset_has_8x_space_32_channels_and_small_token_count():
    from tessera.geometry import Geometry

    small, footage = PRESETS["small"], PRESETS["footage"]
    assert (footage.vae.spatial_factor, footage.vae.temporal_factor, footage.vae.latent_channels) == (8, 4, 32)
    g = {name: Geometry.of(m.vae, m.dit) for name, m in (("small", small), ("footage", footage))}
    assert g["small"].unit_px == g["footage"].unit_px == 32  # pixels per token side: the same tokens at every size
    assert footage.dit.in_channels == footage.vae.latent_channels
