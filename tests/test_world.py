"""The shapes world and the adherence judge."""

import numpy as np

from tessera.data.world import (
    BACKGROUNDS,
    COLOURS,
    WorldConfig,
    all_combos,
    caption,
    held_out_combos,
    render,
    sample_spec,
    spec_for,
    training_text,
    world_clip,
)
from tessera.eval import analyze, eval_cases, score


def test_world_is_deterministic():
    a, spec_a, text_a = world_clip(3, 17, 9, 64, 96)
    b, spec_b, text_b = world_clip(3, 17, 9, 64, 96)
    assert np.array_equal(a, b) and spec_a == spec_b and text_a == text_b
    c, _, _ = world_clip(3, 18, 9, 64, 96)
    assert not np.array_equal(a, c)


def test_shapes_fill_the_requested_frame_and_colours():
    for h, w in [(64, 64), (64, 112), (112, 64)]:
        frames = render(spec_for("red", "square", "right", "navy", 0, aspect=w / h), 5, h, w)
        assert frames.shape == (5, h, w, 3)
        assert tuple(frames[0, 0, 0]) == BACKGROUNDS["navy"]
        colours = {tuple(p) for p in frames.reshape(-1, 3)}
        assert COLOURS["red"] in colours


def test_held_out_combos_never_trained():
    held = held_out_combos()
    assert len(held) == round(0.1 * len(all_combos()))
    rng = np.random.default_rng(0)
    cfg = WorldConfig(pan_fraction=0.0)
    for _ in range(300):
        spec = sample_spec(rng, 1.0, cfg)
        for o in spec.objects:
            assert (o.colour, o.shape, o.motion) not in held


def test_captions_are_varied_and_name_the_attributes():
    spec = spec_for("purple", "triangle", "bouncing", "gray", 0)
    rng = np.random.default_rng(0)
    texts = {caption(spec, rng) for _ in range(30)}
    assert len(texts) >= 5
    for t in texts:
        assert "purple" in t and "triangle" in t and "gray" in t
    assert {training_text(spec, rng) for _ in range(50)} >= {spec.title}


def test_judge_reads_ground_truth_clips():
    cases = eval_cases(60, seed=7)
    analyses = [
        analyze(render(spec_for(c.colour, c.shape, c.motion, c.background, i), 17, 128, 128))
        for i, c in enumerate(cases)
    ]
    result = score(cases, analyses)["all"]
    for key in ("colour", "shape", "motion", "background"):
        assert result[key] >= 0.97, (key, result)


def test_judge_says_nothing_on_an_empty_clip():
    frames = np.full((9, 64, 64, 3), 15, dtype=np.uint8)
    a = analyze(frames)
    assert a.background == "black" and a.colour is None and a.motion is None
