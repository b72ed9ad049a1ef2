"""`tessera train [vae | dit] [--recipe NAME] [flags]`.

Flags come from the config dataclasses (tessera.training.config): RunConfig's as they are,
DiTTrainConfig's as they are, VAETrainConfig's as `--vae-*`. A value comes from the
dataclass default, then the recipe, then the flag. Without a stage, every stage of the
recipe runs (VAE, then DiT). Progress and messages go to stderr; stdout gets one JSON
object naming the files written.
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import dataclass
from pathlib import Path

from tessera.cli.common import UsageError, check_folder, log_to_stderr
from tessera.cli.flags import add_config_flags, given
from tessera.config import ModelConfig
from tessera.run_folder import exclusive
from tessera.training.config import (
    DiTTrainConfig,
    RunConfig,
    VAETrainConfig,
    check_dit_train,
    check_vae_train,
)
from tessera.training.recipes import RECIPES, Recipe, get


def _stages(stage: str | None, recipe: Recipe | None, args: argparse.Namespace) -> tuple[str, ...]:
    if stage is None and recipe is None:
        raise UsageError("give a stage (`tessera train vae` or `tessera train dit`) or --recipe NAME (--recipe list)")
    if recipe and stage and stage not in recipe.stages:
        raise UsageError(f"recipe {recipe.name} has no {stage} stage; it runs {' then '.join(recipe.stages)}")
    stages = (stage,) if stage else recipe.stages
    for other in {"vae", "dit"} - set(stages):
        if given(args, other):
            prefix = "--vae-" if other == "vae" else "--"
            flags = ", ".join(prefix + name.replace("_", "-") for name in given(args, other))
            raise UsageError(f"{flags}: flags of the {other} stage, which this command does not run; drop them")
    return stages


def _model_config(run: RunConfig) -> ModelConfig:
    from tessera.config import PRESETS

    if run.preset not in PRESETS:
        raise UsageError(f"--preset {run.preset} is not one of {', '.join(PRESETS)}")
    model = copy.deepcopy(PRESETS[run.preset])
    if run.shift is not None:
        if not 0.1 <= run.shift <= 20:
            raise UsageError(f"--shift {run.shift} is outside 0.1..20; 1 is no shift, the small preset uses 1.5")
        model.timestep_shift = run.shift
    if run.shift_ref_tokens is not None:
        model.shift_ref_tokens = run.shift_ref_tokens
    if run.decoder_refine_blocks is not None:
        model.vae.decoder_refine_blocks = run.decoder_refine_blocks
    return model


def _run_vae(run: RunConfig, model, cfg: VAETrainConfig) -> dict[str, str]:
    """Train (or fine-tune the decoder of) the VAE in OUT/vae; a generation checkpoint given gets its twin."""
    from tessera import checkpoint
    from tessera.training import replace_vae, train_vae

    out = Path(run.out) / "vae"
    final = train_vae(out, model.vae, cfg)
    if final.name != "vae.safetensors":  # stopped early (--vae-stop-at): only the state was written
        return {"vae_state": str(final)}
    if cfg.decoder_from and checkpoint.load(cfg.decoder_from)[2].get("kind") == "generator":
        swapped = out / Path(cfg.decoder_from).name
        replace_vae(cfg.decoder_from, final, swapped)
        return {"vae": str(final), "generator": str(swapped)}
    return {"vae": str(final)}


def _run_dit(run: RunConfig, model, cfg: DiTTrainConfig) -> dict[str, str]:
    """Train the DiT in OUT/dit on the shapes world or a prepared dataset."""
    from tessera.training import train_dit

    out, data = Path(run.out), Path(cfg.data_dir) if cfg.data_dir else None
    vae_path = Path(run.vae) if run.vae else (data / "vae.safetensors" if data else out / "vae" / "vae.safetensors")
    if data and not any((data / "latents").rglob("shard_*.safetensors")):
        raise UsageError(
            f"--data-dir {data} has no latents/shard_*.safetensors; run `tessera prepare SRC --out {data}`"
        )
    if not vae_path.is_file():
        raise UsageError(
            f"VAE checkpoint {vae_path} not found; run `tessera train vae --out {out}` first or pass --vae"
        )
    return {"generator": str(train_dit(out / "dit", model, vae_path, cfg))}


@dataclass
class Plan:
    """What a `tessera train` command will run: the configs of its stages (None: stage not run)."""

    run: RunConfig
    model: ModelConfig
    vae: VAETrainConfig | None
    dit: DiTTrainConfig | None


def plan(args: argparse.Namespace) -> Plan:
    """Dataclass defaults, then the recipe's values, then the flags given; checked, nothing run yet."""
    recipe = get(args.recipe) if args.recipe else None
    stages = _stages(args.stage, recipe, args)
    run = RunConfig(**(recipe.run if recipe else {}) | given(args, "run"))
    model = _model_config(run)
    vae = dit = None
    if "vae" in stages:
        vae = VAETrainConfig(**((recipe and recipe.vae) or {}) | given(args, "vae"))
        check_vae_train(vae, model.vae.spatial_factor, model.vae.temporal_factor)
    if "dit" in stages:
        dit = DiTTrainConfig(**((recipe and recipe.dit) or {}) | given(args, "dit"))
        check_dit_train(dit, model)
    return Plan(run, model, vae, dit)


def cmd_train(args: argparse.Namespace) -> int:
    log_to_stderr()
    if args.recipe == "list":
        print(json.dumps([{"name": r.name, "stages": r.stages, "summary": r.summary} for r in RECIPES.values()]))
        return 0
    p = plan(args)
    check_folder("--out", p.run.out)
    written: dict[str, str] = {}
    with exclusive(p.run.out, "train"):
        if p.vae:
            written |= _run_vae(p.run, p.model, p.vae)
        if p.dit:
            written |= _run_dit(p.run, p.model, p.dit)
    print(json.dumps(written))
    return 0


def add_parser(sub) -> None:
    epilog = "recipes (the bundled model's stages, tessera/weights/MODEL_CARD.md):\n" + "\n".join(
        f"  {r.name:<22} {'+'.join(r.stages):<8} {r.summary}" for r in RECIPES.values()
    )
    t = sub.add_parser(
        "train",
        help="train the VAE, the DiT, or a named recipe of the bundled model",
        description=__doc__.split("\n\n", 1)[1],
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    t.add_argument("stage", nargs="?", choices=["vae", "dit"], help="the stage to run (default: the recipe's stages)")
    t.add_argument(
        "--recipe", default=None, help="a named recipe (below) whose values flags override; 'list' lists them"
    )
    add_config_flags(t.add_argument_group("run"), RunConfig, "run")
    add_config_flags(t.add_argument_group("VAE stage"), VAETrainConfig, "vae", prefix="vae-")
    add_config_flags(t.add_argument_group("DiT stage"), DiTTrainConfig, "dit")
    t.set_defaults(func=cmd_train)
