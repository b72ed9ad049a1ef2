"""One resumable training state for the VAE and the DiT: one crash-safe safetensors file.

The file holds whole tensors, however many processes trained:

    model.{name}          weights and buffers
    ema.{name}            EMA of the weights (DiT)
    opt.{name}.{key}      AdamW moments and step, keyed by parameter name
    rng.torch             the CPU random state of rank 0
    anything else         a part's own tensors (`extra`, e.g. the VAE's discriminator)

with the run configuration as JSON and `step`, `world` and `kind` as metadata. Saving
gathers every sharded tensor (a collective: all ranks call `save`) and rank 0 writes the
file atomically; loading, every rank reads the file and keeps its own shard. So a run saved
by N processes resumes with M (`torchrun --nproc-per-node M ...`), and a crash at any
moment leaves the last complete state in place.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import safe_open

from tessera import checkpoint
from tessera import distributed as D
from tessera.errors import InputError
from tessera.run_folder import differences, listed

log = logging.getLogger(__name__)
KIND = "train_state"
# training settings that only say how the run is watched or when it stops: they may change on resume unannounced
OPERATIONAL = ("steps", "stop_at", "checkpoint_every", "log_every", "tensorboard", "eval_every", "eval_prompts",
               "eval_steps", "eval_seed", "peak_tflops", "workers", "time_limit_s")  # fmt: skip


def saved_step(path: Path) -> int:
    """The step of the state at `path` (0 if there is none yet); reads only the header."""
    if not path.is_file():
        return 0
    with safe_open(str(path), framework="pt") as f:
        return int((f.metadata() or {}).get("step", 0))


def _named_opt_params(model: torch.nn.Module, opt: torch.optim.Optimizer) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) in the optimiser's own order, which is the order of its state-dict indices."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [(names[id(p)], p) for group in opt.param_groups for p in group["params"]]


class TrainState:
    """Save and restore model, EMA, optimiser, RNG and step at `path` (see the module doc)."""

    def __init__(self, path: Path, d: D.Dist | None = None):
        self.path, self.d = path, d or D.Dist()
        self.config: dict = {}  # the run configuration of the loaded state
        self.tensors: dict[str, torch.Tensor] = {}  # everything loaded, for parts with their own tensors

    def save(
        self,
        step: int,
        model: torch.nn.Module,
        opt: torch.optim.Optimizer,
        config: dict,
        ema: list[torch.Tensor] | None = None,
        extra: dict[str, torch.Tensor] | None = None,
    ) -> None:
        tensors = {f"model.{k}": D.full(v).cpu() for k, v in model.state_dict().items()}
        if ema is not None:  # EMA entries are this rank's shards of the parameters, in order
            params = list(model.named_parameters())
            tensors |= {f"ema.{k}": D.full(D.like(e, p)).cpu() for (k, p), e in zip(params, ema)}
        for name, p in _named_opt_params(model, opt):
            for key, v in opt.state.get(p, {}).items():
                tensors[f"opt.{name}.{key}"] = D.full(v).cpu() if torch.is_tensor(v) else torch.tensor(v)
        tensors["rng.torch"] = torch.get_rng_state()
        tensors |= extra or {}
        if self.d.main:
            meta = {"kind": KIND, "step": str(step), "world": str(self.d.world)}
            checkpoint.save(self.path, tensors, config, **meta)
        D.barrier(self.d)

    def load(
        self,
        model: torch.nn.Module,
        opt: torch.optim.Optimizer,
        ema: list[torch.Tensor] | None = None,
        config: dict | None = None,
    ) -> int:
        """Restore the saved state into model / ema / opt on every rank; returns its step (0 if none).

        With `config` (this run's, as `save` takes it: {"train": ..., and the model's sections}), a state
        of another model (any section but "train" differs) is refused, and changed training settings
        are logged, so a run never silently continues another one.
        """
        if not self.path.is_file():
            return 0
        tensors, self.config, meta = checkpoint.load(self.path)
        if meta.get("kind") != KIND:
            raise InputError(f"{self.path} is a {meta.get('kind')!r} checkpoint, not a training state; use a new --out")
        if config is not None:
            self._check_config(config)
        with torch.no_grad():
            for k, v in model.state_dict().items():
                D.local(v).copy_(D.local(D.shard_of(tensors[f"model.{k}"], v)))
            for (k, p), e in zip(model.named_parameters(), ema or []):
                e.copy_(D.local(D.shard_of(tensors[f"ema.{k}"], p)))
        self._load_optimizer(model, opt, tensors)
        torch.set_rng_state(tensors["rng.torch"])
        self.tensors = tensors
        step, world = int(meta["step"]), int(meta.get("world", 1))
        log.info("resuming from step %d (saved by %d process(es), now %d)", step, world, self.d.world)
        return step

    def _check_config(self, config: dict) -> None:
        model = differences(
            {k: v for k, v in self.config.items() if k != "train"}, {k: v for k, v in config.items() if k != "train"}
        )
        if model:
            raise InputError(
                f"{self.path} is the state of another model ({listed(model)}); use a new --out for this one, "
                "or the same model settings to resume it"
            )
        changed = differences(self.config.get("train", {}), config.get("train", {}), free=OPERATIONAL)
        if changed:
            log.warning("resuming with changed training settings: %s", listed(changed, most=12))

    @staticmethod
    def _load_optimizer(model: torch.nn.Module, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
        sd = opt.state_dict()
        state: dict[int, dict[str, torch.Tensor]] = {}
        for i, (name, p) in enumerate(_named_opt_params(model, opt)):
            for key, v in checkpoint.split_prefix(tensors, f"opt.{name}").items():
                state.setdefault(i, {})[key] = D.shard_of(v, p) if v.dim() > 0 else v
        sd["state"] = state
        opt.load_state_dict(sd)
