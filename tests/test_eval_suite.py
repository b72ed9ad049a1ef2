"""The eval suite: temporal measures on synthetic clips, its noise estimates, and `tessera eval --suite --quick`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tessera.cli import main
from tessera.data.world import render, spec_for
from tessera.suite import agree, bootstrap, estimate, wilson
from tessera.temporal import (
    colour_consistency,
    flicker,
    identity_consistency,
    motion_smoothness,
    size_consistency,
    temporal_measures,
)

BG, RED = np.array([110, 110, 110], np.uint8), np.array([220, 40, 40], np.uint8)


def disc_clip(centres: list[tuple[float, float]], radius: float = 20.0, size: int = 128, colours=None) -> np.ndarray:
    """A red disc on gray at the given centres (px), one frame each: (T, size, size, 3) uint8."""
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.empty((len(centres), size, size, 3), np.uint8)
    for i, (x, y) in enumerate(centres):
        out[i] = BG
        out[i][np.hypot(xx - x, yy - y) <= radius] = RED if colours is None else colours[i]
    return out


def steady(t: int = 17) -> np.ndarray:
    return disc_clip([(30 + 4 * i, 64) for i in range(t)])


def test_a_steady_clip_scores_near_perfect():
    m = temporal_measures(steady(), "right")
    assert m["colour"] == m["size"] == m["identity"] == 1.0
    assert m["flicker"] == 1.0 and m["flicker_0_255"] == 0.0
    assert m["smoothness"] > 0.98
    assert temporal_measures(steady(), "growing")["size"] is None  # size is not asked of growing prompts


def test_world_renders_are_consistent_for_every_motion():
    for motion in ("left", "up", "spinning", "still", "growing"):
        clip = render(spec_for("blue", "square", motion, "black", 3), 17, 128, 128)
        m = temporal_measures(clip, motion)
        assert m["colour"] == 1.0 and m["identity"] == 1.0 and m["flicker"] == 1.0, (motion, m)


def test_colour_jitter_lowers_colour_consistency():
    rng = np.random.default_rng(0)
    jitter = [np.clip(RED.astype(int) + rng.integers(-60, 61, 3), 0, 255).astype(np.uint8) for _ in range(17)]
    jittered = disc_clip([(30 + 4 * i, 64) for i in range(17)], colours=jitter)
    assert colour_consistency(steady())["score"] == 1.0
    assert colour_consistency(jittered)["score"] < 0.9
    assert colour_consistency(jittered)["max_rgb_distance"] > colour_consistency(steady())["max_rgb_distance"] + 20


def test_size_changes_and_shape_changes_lower_their_scores():
    pulsing = np.concatenate([disc_clip([(64, 64)], radius=r) for r in [20, 28] * 8])
    assert size_consistency(steady())["cv"] < 0.02
    assert size_consistency(pulsing)["score"] <= 0.5 and size_consistency(pulsing)["cv"] > 0.15
    squares = steady().copy()
    for i in range(0, 17, 2):  # every other frame a square of the same area instead of the disc
        squares[i] = BG
        x = 30 + 4 * i
        squares[i, 46:82, x - 18 : x + 18] = RED
    assert identity_consistency(steady())["score"] == 1.0
    assert identity_consistency(squares)["score"] < 0.6


def test_background_flicker_raises_flicker():
    rng = np.random.default_rng(1)
    noisy = steady().astype(int)
    noisy += rng.integers(-12, 13, size=(17, 1, 1, 1))  # the whole frame brightens and darkens
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    calm, busy = flicker(steady()), flicker(noisy)
    assert calm["mean_abs_change"] == 0.0 and calm["score"] == 1.0
    assert busy["mean_abs_change"] > 4.0 and busy["score"] < calm["score"]
    assert abs(busy["score"] - (1 - busy["mean_abs_change"] / 255)) < 1e-9


def test_a_jerky_trajectory_lowers_smoothness():
    rng = np.random.default_rng(2)
    jerky = disc_clip([(30 + 4 * i + rng.uniform(-8, 8), 64 + rng.uniform(-8, 8)) for i in range(17)])
    smooth, rough = motion_smoothness(steady()), motion_smoothness(jerky)
    assert smooth["residual_px"] < 0.5 and smooth["score"] > 0.95
    assert rough["score"] < 0.7 and rough["residual_px"] > 2.0


def test_a_vanishing_object_is_inconsistent():
    clip = steady()
    clip[8:] = BG  # gone halfway
    assert colour_consistency(clip)["score"] == pytest.approx(8 / 17)
    assert identity_consistency(clip)["score"] == pytest.approx(8 / 17)


def test_intervals_contain_the_rate_and_narrow_with_more_prompts():
    lo, hi = wilson(30, 40)
    assert lo < 0.75 < hi
    lo2, hi2 = wilson(300, 400)
    assert lo < lo2 < 0.75 < hi2 < hi
    assert wilson(40, 40)[1] == 1.0 and wilson(40, 40)[0] < 1.0  # a perfect score still has an interval
    values = np.random.default_rng(0).normal(0.5, 0.1, 200)
    blo, bhi = bootstrap(values)
    assert blo < values.mean() < bhi and bhi - blo < 0.05
    assert bootstrap(values) == bootstrap(values)  # fixed resampling seed
    assert estimate([True, False, None, True], binary=True)["n"] == 3
    assert estimate([1.0, 1.0])["ci95"] == [1.0, 1.0] and estimate([1.0, 1.0], binary=True)["ci95"][0] < 1.0
    a, b = estimate([1.0] * 30 + [0.0] * 10, binary=True), estimate([1.0] * 31 + [0.0] * 9, binary=True)
    assert agree(a, b)["within"] and not agree(a, estimate([0.0] * 40, binary=True))["within"]


def test_suite_quick_writes_json_markdown_and_plots(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "suite"
    argv = ["eval", "--suite", "--quick", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--steps", "1"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    result = json.loads((out / "suite.json").read_text())
    assert printed["json"] == str(out / "suite.json")
    assert sorted(p.name for p in out.iterdir()) == [
        "adherence_vs_guidance.png", "adherence_vs_steps.png", "suite.json", "suite.md",
    ]  # fmt: skip
    assert result["template"]["adherence"]["colour"]["n"] == 4
    assert set(result["paraphrase"]) == {"enhancer_on", "enhancer_off"}
    assert set(result["temporal"]["generated"]) >= {"colour", "size", "identity", "flicker", "smoothness"}
    assert result["temporal"]["world"]["colour"]["value"] == 1.0  # the world's own renders keep their colour
    assert len(result["sweep"]["steps"]) == 4 and len(result["sweep"]["guidance"]) == 2
    assert result["vae"]["shapes"]["psnr_db"]["n"] == 1 and result["time"]["seconds_one_clip_median"] > 0
    md = (out / "suite.md").read_text()
    assert "| template | 4 |" in md and "## Temporal" in md and "## VAE" in md and "adherence_vs_steps.png" in md
    for png in ("adherence_vs_steps.png", "adherence_vs_guidance.png"):
        assert Image.open(out / png).size[0] >= 5 * 200
    # fixed seeds: a second run gives the same figures; --repeat adds a run with other seeds and compares
    again = tmp_path / "again"
    assert main([*argv[:-4], "--out", str(again), "--steps", "1", "--repeat", "2"]) == 0
    second = json.loads((again / "suite.json").read_text())
    for part in ("temporal", "paraphrase", "two_object", "sweep"):
        assert second[part] == result[part], part
    for kind in ("shapes", "pans"):
        assert second["vae"][kind]["psnr_db"] == result["vae"][kind]["psnr_db"]
    assert second["template"]["adherence"] == result["template"]["adherence"]
    (rep,) = second["template"]["repeats"]
    assert rep["seed_offset"] == 1000 and set(rep["agreement"]) >= {"colour", "shape", "motion", "background"}
    assert "## Repeat with other seeds" in (again / "suite.md").read_text()


@pytest.mark.parametrize(
    "extra", [["--json", "x.json"], ["--set", "paraphrase"], ["--no-enhance"], ["--repeat", "0"], ["--repeat", "11"]]
)
def test_suite_flags_that_do_not_fit_exit_2(extra, tiny_checkpoint, tmp_path):
    assert main(["eval", "--suite", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "s"), *extra]) == 2
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("extra", [["--quick"], ["--repeat", "2"], ["--out", "d"]])
def test_suite_flags_without_suite_exit_2(extra, tiny_checkpoint):
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), *extra]) == 2
