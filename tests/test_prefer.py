"""Preference tuning: prompts kept apart from the evaluation, pairs, the DPO loss, and the recipe end to end."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tessera import checkpoint
from tessera.config import DiTConfig
from tessera.data.world import held_out_combos, simple_prompt
from tessera.enhance import RuleEnhancer
from tessera.eval import eval_cases, paraphrase_cases
from tessera.models.dit import DiT
from tessera.models.text import TextEmbedding
from tessera.prefer import build_pairs, dpo_loss, preference_prompts, prompt_texts


def test_pair_prompts_avoid_held_out_and_evaluated_combinations():
    cases = preference_prompts(300, seed=0)
    asked = {(c.colour, c.shape, c.motion) for c in eval_cases(120)} | set(held_out_combos())
    assert len(cases) == 300 and not {c[:3] for c in cases} & asked
    assert cases == preference_prompts(300, seed=0) and cases != preference_prompts(300, seed=1)
    by_combo = {}
    for c in cases:
        by_combo.setdefault(c[:3], []).append(c[3])
    # a combination comes back with another background before any background repeats
    assert all(len(set(b[:3])) == min(3, len(b)) for b in by_combo.values())


def test_rich_wording_prompts_name_the_same_attributes_in_other_words():
    cases = preference_prompts(40, seed=3)
    assert prompt_texts(cases, "template", 3) == [simple_prompt(*c) for c in cases]
    texts = prompt_texts(cases, "full", 3)
    assert texts == prompt_texts(cases, "full", 3)  # the same every run, so a resumed run pairs the same texts
    rich = [(t, c) for t, c in zip(texts, cases) if t != simple_prompt(*c)]
    assert len(rich) == 20  # every other prompt
    assert not {t for t, _ in rich} & {c.prompt for c in paraphrase_cases(10_000)}  # the paraphrase set stays unseen
    enhancer = RuleEnhancer()
    for t, c in rich:
        e = enhancer.enhance(t)
        assert (e.objects[0].get("colour"), e.objects[0].get("shape"), e.objects[0].get("motion"), e.background) == c, t
    with pytest.raises(ValueError, match="wording"):
        prompt_texts(cases, "poetic", 3)


def test_pairs_are_best_against_worst_and_ties_are_dropped():
    samples = {"scores": torch.tensor([[1.0, 3.2, 2.0, 0.9], [2.0, 2.1, 2.05, 2.0], [4.1, 4.0, 1.2, 3.0]])}
    assert build_pairs(samples, min_gap=1.0) == [(0, 1, 3), (2, 0, 2)]
    assert build_pairs(samples, min_gap=0.05) == [(0, 1, 3), (1, 1, 0), (2, 0, 2)]


def _dit() -> DiT:
    torch.manual_seed(0)
    dit = DiT(DiTConfig(in_channels=4, width=64, depth=2, heads=2, text_dim=32)).eval()
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return dit


def test_dpo_loss_starts_at_log_2_and_its_gradient_prefers_the_winner():
    import copy

    reference = _dit().requires_grad_(False)
    policy = copy.deepcopy(reference).train().requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    x_w, x_l, noise = (torch.randn((3, 4, 2, 8, 8), generator=g) for _ in range(3))
    tokens = torch.randn(3, 5, 32, generator=g)
    text = TextEmbedding(tokens, torch.ones(3, 5, dtype=torch.bool), tokens.mean(1))
    t = torch.tensor([0.3, 0.6, 0.9])
    loss, acc, inner = dpo_loss(policy, reference, x_w, x_l, text.as_kwargs(), t, noise, beta=100.0)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-6) and inner == 0.0
    opt = torch.optim.SGD(policy.parameters(), lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        dpo_loss(policy, reference, x_w, x_l, text.as_kwargs(), t, noise, beta=100.0)[0].backward()
        opt.step()
    after, acc, inner = dpo_loss(policy, reference, x_w, x_l, text.as_kwargs(), t, noise, beta=100.0)
    assert after.item() < loss.item() and acc == 1.0 and inner > 0  # lower error on winners than the reference
    # swapping winner and loser reverses the sign of the preference
    swapped = dpo_loss(policy, reference, x_l, x_w, text.as_kwargs(), t, noise, beta=100.0)
    assert swapped[2] == pytest.approx(-inner, rel=1e-4)


def test_recipe_runs_end_to_end_and_resumes(tiny_checkpoint, tmp_path):
    out = tmp_path / "pref"
    cmd = [sys.executable, "-m", "tessera", "prefer", "--model", str(tiny_checkpoint), "--out", str(out)]
    cmd += ["--prompts", "4", "--samples", "2", "--steps", "2", "--train-steps", "12", "--batch", "2"]
    cmd += ["--min-gap", "0.0001", "--lr", "1e-3", "--save-every", "4"]
    cmd += ["--width", "128", "--height", "128", "--duration-s", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["clips"] == 8 and 1 <= summary["pairs"] <= 4, summary
    assert "samples 4/4 prompts" in run.stderr and "preference step 0/12" in run.stderr
    tensors, _, meta = checkpoint.load(summary["checkpoint"])
    base, _, _ = checkpoint.load(tiny_checkpoint)
    assert meta["name"] == "tiny-pref" and json.loads(meta["preference_recipe"])["train_steps"] == 12
    assert all(torch.equal(tensors[k], base[k]) for k in base if k.startswith("vae."))  # the VAE is kept
    assert any(not torch.equal(tensors[k], base[k].to(tensors[k].dtype)) for k in base if k.startswith("dit."))
    history = json.loads((out / "prefer.json").read_text())["history"]
    assert len(history["loss"]) == 12
    # a re-run finds the samples and the finished state: nothing is sampled or trained again, same result
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "samples 4/4" not in again.stderr and "preference step" not in again.stderr
    second, _, _ = checkpoint.load(summary["checkpoint"])
    assert all(torch.equal(tensors[k], second[k]) for k in tensors)
    # the folder holds this run: other settings are refused before any sampling, naming what differs
    other = subprocess.run(cmd + ["--seed", "1"], capture_output=True, text=True, timeout=600, env=env)
    assert other.returncode == 2 and "seed 0 -> 1" in other.stderr and "samples" not in other.stderr, other.stderr
    # more training steps continue the run from its saved state, without sampling again
    longer = subprocess.run(cmd + ["--train-steps", "16"], capture_output=True, text=True, timeout=600, env=env)
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert "samples 4/4" not in longer.stderr and "resuming from step 12" in longer.stderr, longer.stderr[-2000:]
    continued = json.loads((out / "prefer.json").read_text())["history"]["loss"]
    assert len(continued) == 16 and continued[:12] == history["loss"]


def test_a_run_whose_clips_all_score_alike_says_so_and_how_to_fix_it(tiny_checkpoint, tmp_path):
    cmd = [sys.executable, "-m", "tessera", "prefer", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "p")]
    cmd += ["--prompts", "2", "--samples", "2", "--steps", "1", "--min-gap", "100", "--width", "128"]
    cmd += ["--height", "128", "--duration-s", "1"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 2 and "no preference pairs" in run.stderr and "--min-gap" in run.stderr, run.stderr
    assert "internal error" not in run.stderr and not (tmp_path / "p" / "preferred.safetensors").exists()


def test_recipe_rejects_bad_input(tiny_checkpoint, tmp_path):
    base = [sys.executable, "-m", "tessera", "prefer", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "x")]
    for extra, expect in (
        (["--samples", "1"], "at least 2 clips"),
        (["--beta", "0"], "--beta"),
        (["--width", "100"], "multiple of 32"),
        (["--device", "tpu0"], "--device"),
        (["--seed", "-1"], "--seed -1"),
        (["--duration-s", "nan"], "--duration-s nan"),
        (["--min-gap", "-5"], "--min-gap -5"),
        (["--temporal-weight", "nan"], "--temporal-weight nan"),
        *([] if torch.cuda.is_available() else [(["--device", "cuda"], "no CUDA GPU")]),
    ):
        run = subprocess.run(base + extra, capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and expect in run.stderr, (extra, run.stderr[-500:])
    assert not (tmp_path / "x").exists()
