"""Recipes and the `tessera train` flags: made from the config dataclasses, faithful to the model card."""

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

import tessera
from tessera.cli import build_parser, main
from tessera.cli.train import plan
from tessera.errors import InputError
from tessera.training.config import DiTTrainConfig, RunConfig, VAETrainConfig
from tessera.training.recipes import RECIPES

# The commands recorded in tessera/weights/MODEL_CARD.md before recipes existed, in their
# original spelling (older flags are still accepted). Stages 2 to 6 are verbatim.
CARD = {
    "tessera-small:stage2": """dit --out runs/cont --vae runs/small/vae/vae.safetensors
        --init-from runs/small/dit/tessera-small.safetensors
        --dit-steps 3000 --lr 5e-4 --warmup 100 --shift 3.0 --batch 16 --clips 2048 --eval-every 750""",
    "tessera-small:stage3": """dit --out runs/cont3 --vae runs/small/vae/vae.safetensors
        --init-from runs/cont/dit/tessera-small.safetensors
        --dit-steps 2800 --lr 5e-4 --warmup 100 --shift 3.0 --batch 16 --clips 2048 --eval-every 700 --seed 1""",
    "tessera-small:stage4": """dit --out runs/cont4 --vae runs/small/vae/vae.safetensors
        --init-from runs/cont3/dit/tessera-small.safetensors
        --dit-steps 3500 --lr 5e-4 --warmup 100 --shift 3.0 --batch 16 --clips 2048 --eval-every 700 --seed 2""",
    "tessera-small:stage5": """dit --out runs/buckets --vae runs/small/vae/vae.safetensors
        --init-from runs/cont4/dit/tessera-small.safetensors
        --shapes 256x256,448x256,256x448 --frames 33 --durations-s 1,2,4 --clips 6000
        --batch 64 --token-budget 49152 --dit-steps 20000 --time-limit-min 8.2
        --lr 5e-4 --warmup 200 --shift 3.0 --shift-ref-tokens 320 --seed 3
        --eval-every 0 --checkpoint-every 1000""",
    "tessera-small:stage6": """vae --out runs/dec --decoder-from tessera/weights/tessera-small.safetensors
        --decoder-refine-blocks 2 --vae-steps 3000 --vae-batch 2 --vae-size 256 --vae-frames 9
        --pan-fraction 0.3 --vae-lr 3e-4""",
}
# What the recipes change on purpose, each said in the card: stages 2 to 4 reuse stage 1's latent
# cache, and stage 6 starts from stage 5's checkpoint (the bundled file held it then).
CHANGED = {
    "tessera-small:stage2": {"data_dir": "runs/small/dit"},
    "tessera-small:stage3": {"data_dir": "runs/small/dit"},
    "tessera-small:stage4": {"data_dir": "runs/small/dit"},
    "tessera-small:stage6": {"decoder_from": "runs/buckets/dit/tessera-small.safetensors"},
}


def _plan(command: str):
    return plan(build_parser().parse_args(["train", *shlex.split(command)]))


@pytest.mark.parametrize("name", sorted(CARD))
def test_recipe_is_the_command_the_model_card_recorded(name):
    by_recipe, by_flags = _plan(f"--recipe {name}"), _plan(CARD[name])
    assert by_recipe.model == by_flags.model  # shift, shift reference and refine blocks end up here

    def paths(run):
        return run.out, run.vae, run.preset

    assert paths(by_recipe.run) == paths(by_flags.run)
    for stage in ("vae", "dit"):
        a, b = getattr(by_recipe, stage), getattr(by_flags, stage)
        assert (a is None) == (b is None), stage
        if a is not None:
            assert a == dataclasses.replace(b, **CHANGED.get(name, {})), stage


def test_stage1_is_the_card_recipe():
    p = _plan("--recipe tessera-small:stage1")
    assert (p.vae.steps, p.vae.batch, p.vae.frames, p.vae.size_px, p.vae.lr, p.vae.warmup_steps) == (
        1200, 6, 9, 128, 1e-3, 100,
    )  # fmt: skip
    assert (p.vae.pan_fraction, p.vae.kl_weight) == (0.25, 1e-4)
    assert (p.dit.clips, p.dit.frames, p.dit.height_px, p.dit.width_px, p.dit.seed) == (2048, 17, 256, 256, 0)
    assert (p.dit.steps, p.dit.batch, p.dit.lr, p.dit.warmup_steps) == (1900, 16, 8e-4, 200)
    assert (p.dit.min_lr_fraction, p.dit.ema_decay, p.dit.text_dropout, p.dit.bf16) == (0.05, 0.999, 0.1, True)
    assert (p.model.timestep_shift, p.model.shift_ref_tokens) == (1.5, 0)
    assert p.run.out == "runs/small"


def test_flags_override_a_recipe_and_only_its_stage_runs():
    p = _plan("dit --recipe tessera-small:stage5 --steps 7 --shapes 64x32 --time-limit-min 1 --out x")
    assert (p.dit.steps, p.dit.shapes, p.dit.time_limit_s, p.run.out) == (7, ((32, 64),), 60.0, "x")
    assert (p.dit.lr, p.dit.token_budget, p.model.shift_ref_tokens) == (5e-4, 49152, 320)  # from the recipe
    assert p.vae is None
    p = _plan("vae --recipe tessera-small:stage1 --vae-steps 3 --no-vae-bf16")
    assert (p.vae.steps, p.vae.bf16, p.vae.batch, p.dit) == (3, False, 6, None)


def test_every_config_field_is_a_flag():
    """Each field takes a flag that sets it, and nothing else (a non-default value per field)."""
    for cls, section, prefix in ((DiTTrainConfig, "dit", ""), (VAETrainConfig, "vae", "vae-")):
        for f in dataclasses.fields(cls):
            if f.type in ("str",):
                value = text = (f.metadata["choices"] or ("somewhere",))[-1]
            elif f.type == "bool":
                value, text = not f.default, None
            elif f.type in ("int", "float"):
                value = f.default + (2 if f.type == "int" else 0.5)
                text = str(value / 60 if f.name == "time_limit_s" else value)
            else:
                continue  # tuples: covered by their parsers in the tests above
            flag = f.metadata["flag"] or f"--{prefix}{f.name.replace('_', '-')}"
            if text is None:
                argv = [f"--{prefix}{f.name.replace('_', '-')}" if value else f"--no-{prefix}{f.name}"]
            else:
                argv = [flag, text]
            args = build_parser().parse_args(["train", section, *argv])
            got = vars(args)
            assert {k: v for k, v in got.items() if k.startswith(("dit.", "vae.", "run."))} == {
                f"{section}.{f.name}": pytest.approx(value) if isinstance(value, float) else value
            }, (cls.__name__, f.name)
    assert {f.name for f in dataclasses.fields(RunConfig)} <= {a.dest.split(".")[-1] for a in _train_actions()}


def _train_actions():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["train"]._actions


def _exit_code(argv: list[str]) -> int:
    """main's return value, or the code argparse exits with on a flag it rejects itself."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_recipes_list_and_bad_input_exit_codes(capsys):
    assert main(["train", "--recipe", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in listed] == list(RECIPES) and listed[0]["stages"] == ["vae", "dit"]
    for argv in (
        ["train"],  # neither a stage nor a recipe
        ["train", "--recipe", "tessera-small:stage99"],  # no such recipe
        ["train", "dit", "--recipe", "tessera-small:stage6"],  # a VAE-only recipe
        ["train", "dit", "--vae-steps", "3"],  # a flag of a stage not run
        ["train", "dit", "--shapes", "100x100"],
        ["train", "dit", "--durations-s", "9"],
        ["train", "dit", "--time-limit-min", "5", "--warmup-steps", "10"],
        ["train", "vae", "--vae-size-px", "100"],
        ["train", "dit", "--shift", "50"],
        ["train", "dit", "--out", "/nonexistent/run"],  # no VAE there
    ):
        assert _exit_code(argv) == 2, argv
    assert (
        "not a multiple of 32 (VAE 16 × patch 2); try 96" in capsys.readouterr().err
    )  # the geometry's message, one line
    with pytest.raises(InputError, match="warmup"):
        _plan("dit --time-limit-min 5 --warmup-steps 10")


def test_model_card_spells_out_each_recipe_correctly():
    """Where the card writes a recipe out as flags (`# = tessera train ...`), the flags give the recipe."""
    card = (Path(tessera.__file__).parent / "weights" / "MODEL_CARD.md").read_text()
    found = re.findall(r"tessera train --recipe (\S+)\n# = tessera train (.*?)(?=\n```|\ntessera train)", card, re.S)
    assert {name for name, _ in found} == {f"tessera-small:stage{i}" for i in (2, 5, 6, 9)} | {
        "tessera-small:edit", "tessera-footage:vae1", "tessera-footage:vae2",
    }  # fmt: skip
    for name, spelled in found:
        flags = " ".join(line.strip(" #\\") for line in spelled.splitlines())
        a, b = _plan(f"--recipe {name}"), _plan(flags)
        assert (a.model, a.vae, a.dit) == (b.model, b.vae, b.dit), name
        assert (a.run.out, a.run.vae) == (b.run.out, b.run.vae), name


def test_train_writes_one_json_object_to_stdout(tmp_path, capsys):
    """stdout is the CLI's JSON channel: progress and messages go to stderr."""
    argv = ["train", "vae", "--preset", "tiny", "--out", str(tmp_path), "--vae-steps", "1", "--vae-batch", "1"]
    assert main([*argv, "--vae-size-px", "32", "--vae-frames", "5", "--vae-checkpoint-every", "1"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written == {"vae": str(tmp_path / "vae" / "vae.safetensors")} and Path(written["vae"]).is_file()
