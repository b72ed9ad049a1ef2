"""Vocabularies, rich captions, the prompt enhancer and the held-out paraphrase set (issue 15)."""

import hashlib
import json
import re

import numpy as np
import pytest

from tessera.cli import main
from tessera.data.world import captions
from tessera.data.world.captions import simple_prompt, training_text
from tessera.data.world.latent_cache import clip_texts
from tessera.data.world.scenes import (
    BACKGROUNDS,
    ClipSpec,
    WorldConfig,
    all_combos,
    random_object,
    render,
    sample_spec,
)
from tessera.data.world.wording import ATTRIBUTES, all_wordings, rich_caption, typo, vocab
from tessera.enhance import Enhanced, LMEnhancer, RuleEnhancer, edit_distance, is_word, named_attributes
from tessera.eval import analyze_objects, paraphrase_cases, read_eval_set, two_scores
from tessera.pipeline import TesseraPipeline
from tessera.safety.ledger import LEDGER_FILE, Ledger

WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")


def _reading(e: Enhanced) -> list[tuple]:
    return [tuple(o.get(k) for k in ("colour", "shape", "motion")) for o in e.objects] + [e.background]


def _training_texts(n: int) -> set[str]:
    """What a rich-wording training run would read: world clips' texts drawn both ways the trainer draws them."""
    texts = set()
    for i in range(n):
        rng = np.random.default_rng([7, i])
        spec = sample_spec(rng, 1.0, WorldConfig(two_object_fraction=0.3, wording="rich"))
        texts.add(training_text(spec, rng, "rich"))
        texts.update(clip_texts(spec, rng, "rich"))
    return texts


def test_vocabularies_are_disjoint_between_values_and_between_splits():
    for attribute in ATTRIBUTES:
        lists = vocab()[attribute]
        seen: dict[str, str] = {}
        for value, splits in lists.items():
            assert splits["train"][0] == value or (attribute == "motion" and value in splits["train"][0])
            assert not set(splits["train"]) & set(splits["heldout"]), (attribute, value)
            for w in splits["train"] + splits["heldout"]:
                assert seen.setdefault(w, value) == value, f"{w!r} names both {seen[w]} and {value}"
    # an object colour never uses a background's name, so the enhancer cannot confuse the two
    colour_words = {w for p in all_wordings("colour") for w in WORD.findall(p)}
    assert not colour_words & set(BACKGROUNDS)


def test_rich_captions_read_back_to_their_clip_through_the_enhancer():
    enhancer = RuleEnhancer()
    rng = np.random.default_rng(0)
    cfg = WorldConfig(pan_fraction=0.0, two_object_fraction=0.3)
    for _ in range(200):
        spec = sample_spec(rng, 1.0, cfg)
        text = rich_caption(spec, rng, "train")
        want = [(o.colour, o.shape, o.motion) for o in spec.objects] + [spec.background]
        assert _reading(enhancer.enhance(text)) == want, text


def test_typos_change_only_long_words_and_keep_first_letters():
    rng = np.random.default_rng(0)
    text = "a crimson triangle drifting to the left against pitch black"
    out = typo(text, rng, 1.0)
    assert out != text and len(out.split()) == len(text.split())
    for a, b in zip(text.split(), out.split()):
        assert (a == b) if len(a) < 4 else (a[0] == b[0] and abs(len(a) - len(b)) <= 1)


def test_paraphrase_set_is_held_out_from_training_texts():
    rows = read_eval_set("paraphrase")
    assert len(rows) >= 300 and len(read_eval_set("two_object")) >= 50
    texts = _training_texts(1500)
    assert not {r["prompt"] for r in rows} & texts
    train_words = {w for t in texts for w in WORD.findall(t.lower())}
    v = vocab()
    trained = {w for a in ATTRIBUTES for p in all_wordings(a, "train") for w in WORD.findall(p)}
    trained |= {w for p in v["sentences"]["train"] + v["background_frames"]["train"] for w in WORD.findall(p)}
    fixed = [p for ps in captions._PAN_PHRASES.values() for p in ps] + list(captions.PHOTOS.values())
    trained |= {w for p in fixed for w in WORD.findall(p)}  # photo-pan captions ("a slow downward tilt")
    held = {w for a in ATTRIBUTES for p in all_wordings(a, "heldout") for w in WORD.findall(p)}
    held_words = held - trained - set(v["filler"])  # content words only the held-out wordings use
    assert len(held_words) >= 40
    assert not held_words & train_words, sorted(held_words & train_words)
    bench_words = {w for r in rows for w in WORD.findall(r["prompt"].lower())}
    assert len(held_words & bench_words) >= 0.9 * len(held_words)


def test_full_wording_teaches_every_attribute_word_but_keeps_the_benchmark_sentences_out():
    """Wording "full" (stage 9): every word of the vocabularies reaches training texts; the held-out sentence
    shapes and background frames, and the paraphrase set's prompts themselves, never do."""
    texts = set()
    for i in range(3000):
        rng = np.random.default_rng([11, i])
        spec = sample_spec(rng, 1.0, WorldConfig(two_object_fraction=0.3, wording="full"))
        texts.update(clip_texts(spec, rng, "full"))
    lowered = " ".join(texts).lower()
    for attribute in ATTRIBUTES:
        for w in all_wordings(attribute, "heldout"):
            assert w.lower() in lowered, (attribute, w)
    v = vocab()
    for frame in v["sentences"]["heldout"] + v["background_frames"]["heldout"]:
        fixed = [part.strip(" ,.!?:").lower() for part in re.split(r"\{\w+\}", frame)]
        pattern = ".*".join(rf"\b{re.escape(f)}\b" for f in fixed if len(f) > 3)
        if pattern:  # "{Bg}: {obj}" has no words of its own
            assert not any(re.search(pattern, t.lower()) for t in texts), frame
    assert not {r["prompt"] for r in read_eval_set("paraphrase")} & texts
    with pytest.raises(ValueError, match="wording"):
        captions.caption(ClipSpec(kind="shapes", background="black", objects=()), np.random.default_rng(0), "all")


def test_enhancer_leaves_template_prompts_as_they_are():
    enhancer = RuleEnhancer()
    for c, s, m in all_combos():
        for bg in BACKGROUNDS:
            p = simple_prompt(c, s, m, bg)
            e = enhancer.enhance(p)
            assert e.text == p and not e.unknown


def test_enhancer_rewrites_free_wording_and_maps_the_paraphrase_set():
    e = RuleEnhancer().enhance("a crimson ball drifting to the left against pitch black")
    assert e.text == "a red circle moving left on a black background"
    assert e.mapped == {"crimson": "red", "ball": "circle", "drifting to the left": "left", "pitch black": "black"}
    cases = paraphrase_cases(10_000)
    right = [_reading(RuleEnhancer().enhance(c.prompt)) == [(c.colour, c.shape, c.motion), c.background] for c in cases]
    assert np.mean(right) >= 0.9
    assert np.mean([r for r, c in zip(right, cases) if "typos" in c.style]) >= 0.7  # typo repair works


@pytest.mark.parametrize("keep", [("colour",), ("shape",), ("motion",), ("colour", "shape"), ("shape", "motion")])
def test_enhancer_never_adds_attributes_and_keeps_unknown_words(keep):
    enhancer = RuleEnhancer()
    words = {"colour": "scarlet", "shape": "wedge", "motion": "twirling"}
    prompt = "a " + " ".join(words[k] for k in ("colour", "shape", "motion") if k in keep) + " juggling sprockets"
    e = enhancer.enhance(prompt)
    assert set(e.objects[0]) == set(keep) and e.background is None
    assert e.unknown == ["juggling", "sprockets"] and e.text.endswith("juggling sprockets")
    assert "background" not in e.text
    nothing = enhancer.enhance("a cat asleep on a sofa")
    assert nothing.text == "a cat asleep on a sofa" and not named_attributes(nothing)
    assert nothing.unknown == ["cat", "asleep", "sofa"]


def test_edit_distance_counts_swaps_drops_doubles_and_changes():
    assert edit_distance("lfet", "left") == 1  # swapped neighbours
    assert edit_distance("ble", "blue") == 1 and edit_distance("yelllow", "yellow") == 1
    assert edit_distance("blut", "blue") == 1 and edit_distance("blut", "blue", substitution=2) == 2
    assert edit_distance("", "red") == 3 and edit_distance("red", "red") == 0


@pytest.mark.parametrize(
    ("typed", "reading"),
    [
        ("a crimsno ball drfiting to the lfet against pitch blakc", [("red", "circle", "left"), "black"]),
        ("a denim ble tigon swivelling with inyk blue all around it", [("blue", "triangle", "spinning"), "navy"]),
        ("a scarlet con shape scalig dwon on jet black", [("red", "circle", "shrinking"), "black"]),
        ("Imagnie a cornflowwer bue square sab plunging downward", [("blue", "square", "down"), None]),
        ("a red-circle moving_left", [("red", "circle", "left"), None]),  # joined words read as their parts
        ("an off-white three-sided shape, square-shaped", [("white", "triangle", None), None]),
    ],
)
def test_enhancer_repairs_typos_from_the_word_and_from_the_phrase_around_it(typed, reading):
    assert _reading(RuleEnhancer().enhance(typed)) == reading


def test_typo_repair_never_turns_real_or_foreign_words_into_attributes():
    enhancer = RuleEnhancer()
    for prompt in (
        "a tree that grew on a hill",  # "grew" is a word, not "grey"
        "a dog full of greed",  # not "green"
        "a groom grooming his horse",  # an inflection of a listed word, not "growing"
        "unboxing a new phone",  # not "unmoving"
        "orang dibacok pakai parang",  # another language: "orang" is not "orange"
        "an orc army with a bom",  # short words: a changed letter is not a typo of "orb" or "box"
    ):
        e = enhancer.enhance(prompt)
        assert not named_attributes(e) and e.text == prompt, (prompt, e)
    assert is_word("grooming") and is_word("hopped") and not is_word("lfet")
    # the same words still read as typed when typo repair is off
    assert _reading(RuleEnhancer(repair_typos=False).enhance("a crimsno ball")) == [(None, "circle", None), None]


def _tiny_lm(folder):
    """A randomly initialised 1-layer GPT-2 with a word-level tokenizer, written with save_pretrained."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = sorted({w for a in ATTRIBUTES for p in all_wordings(a) for w in WORD.findall(p)} | set(vocab()["filler"]))
    table = {w: i for i, w in enumerate(["<unk>", "<eos>", *words, "prompt", "rewritten", ":", "'", "<", ">", "."])}
    tok = Tokenizer(models.WordLevel(table, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    fast.save_pretrained(folder)
    cfg = GPT2Config(vocab_size=len(table), n_positions=256, n_embd=32, n_layer=1, n_head=2, eos_token_id=1)
    GPT2LMHeadModel(cfg).save_pretrained(folder)


def test_lm_enhancer_runs_a_local_causal_lm_and_rejects_added_attributes(tmp_path):
    _tiny_lm(tmp_path / "lm")
    lm = LMEnhancer(tmp_path / "lm", max_new_tokens=12)
    prompt = "a crimson ball drifting to the left"
    answer = lm.generate(prompt)
    assert isinstance(answer, str) and answer == lm.generate(prompt)  # greedy: the same every time
    out = lm.enhance(prompt)
    assert out.source in ("lm", "lm-rejected")
    assert named_attributes(out) <= named_attributes(RuleEnhancer().enhance(prompt))

    class Scripted(LMEnhancer):  # the validation step, with the LM's answer fixed
        answer = ""

        def generate(self, prompt):
            return self.answer

    scripted = Scripted(tmp_path / "lm")
    scripted.answer = "a red circle moving left on a navy background"  # invents a background
    rejected = scripted.enhance(prompt)
    assert rejected.source == "lm-rejected" and rejected.text == "a red circle moving left"
    scripted.answer = "a red circle moving left"
    accepted = scripted.enhance(prompt)
    assert accepted.source == "lm" and accepted.text == "a red circle moving left"


def test_pipeline_encodes_the_enhanced_prompt_and_records_both(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    pipe = TesseraPipeline.from_single_file(tiny_checkpoint)
    settings = dict(num_inference_steps=1, width=128, height=128, duration_s=0.5, fps=2, seed=3)
    free = pipe("a crimson ball drifting to the left", **settings)
    canonical = pipe("a red circle moving left", **settings)
    raw = pipe("a crimson ball drifting to the left", enhance=False, **settings)
    assert free.enhanced_prompt == "a red circle moving left" and raw.enhanced_prompt is None
    assert free.record["prompt_sha256"] == hashlib.sha256(b"a crimson ball drifting to the left").hexdigest()
    assert free.record["settings"]["enhanced_prompt"] == "a red circle moving left"
    assert np.array_equal(free.latents, canonical.latents)  # the encoder read the rewrite
    assert not np.array_equal(free.latents, raw.latents)
    out = tmp_path / "v.mp4"
    args = ["generate", "a scarlet wedge twirling", "-o", str(out), "--checkpoint", str(tiny_checkpoint)]
    args += ["--steps", "1", "--width", "128", "--height", "128", "--duration-s", "0.5", "--fps", "2"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["enhanced_prompt"] == "a red triangle spinning" and printed["unmapped_words"] == []
    entries = Ledger(tmp_path / "home" / LEDGER_FILE).entries()
    assert entries[-1].record.settings["enhanced_prompt"] == "a red triangle spinning"
    assert main([*args, "--no-enhance"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["enhanced_prompt"] is None


def test_two_object_judge_reads_separate_objects():
    rng = np.random.default_rng(0)
    right = 0
    for _ in range(10):
        a = random_object(rng, "red", "circle", "still", 1.0)
        b = random_object(rng, "blue", "triangle", "still", 1.0)
        a = a.__class__(**{**a.__dict__, "x0": 0.25, "y0": 0.5, "radius": 0.15})  # apart: left and right halves
        b = b.__class__(**{**b.__dict__, "x0": 0.75, "y0": 0.5, "radius": 0.15})
        found = analyze_objects(render(ClipSpec("shapes", "navy", (a, b)), 9, 128, 128), ["red", "blue"])
        right += [(f.colour, f.shape, f.motion) for f in found] == [
            ("red", "circle", "still"),
            ("blue", "triangle", "still"),
        ]
    assert right == 10


def test_two_object_scores_count_prompts_with_both_objects_right():
    judged = [
        {"visible": [True, True], "shape_motion": [True, True], "background": True},
        {"visible": [True, True], "shape_motion": [True, False], "background": True},
        {"visible": [True, False], "shape_motion": [True, True], "background": False},
    ]
    s = two_scores(judged)
    assert s["both_objects_right"] == pytest.approx(1 / 3) and s["object_shape_and_motion"] == pytest.approx(5 / 6)
    assert s["both_colours_visible"] == pytest.approx(2 / 3) and s["background"] == pytest.approx(2 / 3)
