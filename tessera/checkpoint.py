"""Safetensors checkpoints that carry their own config.

A checkpoint is one `.safetensors` file: tensors plus string metadata holding the config
as JSON (`"config"`) and anything else the writer wants to record. Writes are atomic
(temporary file, then rename), so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tessera.errors import InputError


def bundled_path() -> Path:
    """The small generation model that ships inside the package."""
    return Path(str(resources.files("tessera") / "weights" / "tessera-small.safetensors"))


class CheckpointError(InputError):
    """A checkpoint is missing, unreadable, damaged or of the wrong kind (bad input: exit code 2)."""


def save(path: str | Path, tensors: dict[str, torch.Tensor], config: dict, **meta: str) -> None:
    """Atomically write `tensors` with `config` (JSON) and `meta` strings as metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(tensors, str(tmp), metadata={"config": json.dumps(config), **meta})
    os.replace(tmp, path)


def load(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict[str, str]]:
    """Read a checkpoint: (tensors, config dict, other metadata). Raises CheckpointError."""
    path = Path(path)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        is_file = False
    if not is_file:
        raise CheckpointError(
            f"checkpoint {str(path)[:200]} does not exist or is not a file; pass --checkpoint with a .safetensors file"
        )
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # SafetensorError, OSError, ...: whatever a damaged file makes the reader raise
        raise CheckpointError(
            f"checkpoint {path} is not a readable safetensors file ({e}); re-download or retrain it"
        ) from e
    if "config" not in meta:
        raise CheckpointError(f"checkpoint {path} has no 'config' metadata; it was not written by tessera")
    try:
        config = json.loads(meta.pop("config"))
    except ValueError as e:
        raise CheckpointError(
            f"checkpoint {path} has config metadata that is not valid JSON ({e}); the file is damaged, "
            "re-download or retrain it"
        ) from e
    if not isinstance(config, dict):
        raise CheckpointError(
            f"checkpoint {path} has a config that is a JSON {type(config).__name__}, not an object; "
            "the file is damaged, re-download or retrain it"
        )
    bad = next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {path} has NaN or infinite values in {bad}; the file is damaged, re-download or retrain it"
        )
    return tensors, config, meta


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under `prefix.` with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str = "opt") -> dict[str, torch.Tensor]:
    """Flatten an Adam-style optimiser state into named tensors `{prefix}.{param}.{name}` for safetensors."""
    out = {}
    for idx, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"{prefix}.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str = "opt") -> None:
    """Restore what `optimizer_tensors` wrote under `prefix`."""
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in split_prefix(tensors, prefix).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)
