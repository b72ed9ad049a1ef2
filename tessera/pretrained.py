"""Pretrained folders, the layout the ecosystem reads: `config.json` + `model.safetensors` per component.

    pipeline folder/
      model_index.json        which class each component is, plus the pipeline's defaults
      transformer/  config.json  model.safetensors
      vae/          config.json  model.safetensors
      text_encoder/ config.json  (+ the encoder's own files when it is not the bundled MiniLM)
      scheduler/    scheduler_config.json

Configs are plain JSON (the dataclasses), weights are safetensors; nothing holds a machine
path or a runtime switch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tessera.errors import InputError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def write_json(path: Path, data: dict) -> None:
    """Atomic JSON write (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path} does not exist; is {path.parent} a folder written by save_pretrained?")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON ({e}); rewrite it with save_pretrained") from e
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def save_component(folder: str | Path, module: torch.nn.Module, cfg, dtype: torch.dtype | None = None) -> Path:
    """Write `config.json` (the config dataclass, with the class name) and `model.safetensors`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    tmp = folder / f".{WEIGHTS}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, folder / WEIGHTS)
    write_json(folder / CONFIG, {"_class_name": type(module).__name__, **dataclasses.asdict(cfg)})
    return folder


def load_component(folder: str | Path, build: Callable[[dict], torch.nn.Module]) -> torch.nn.Module:
    """Rebuild a module from `config.json` with `build(config)` and load `model.safetensors` (as fp32), in eval mode."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; pass a folder written by save_pretrained")
    config = read_json(folder / CONFIG)
    module = build({k: v for k, v in config.items() if not k.startswith("_")})
    try:
        tensors = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError, FileNotFoundError) as e:
        raise InputError(f"{folder / WEIGHTS} is not a readable safetensors file ({e})") from e
    try:
        module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    except RuntimeError as e:
        raise InputError(f"{folder / WEIGHTS} does not match {folder / CONFIG}: {str(e).splitlines()[0]}") from e
    return module.eval()
