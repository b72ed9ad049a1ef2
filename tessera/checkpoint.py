"""Safetensors checkpoints that carry their own config.

A checkpoint is one `.safetensors` file: tensors plus string metadata holding the config
as JSON (`"config"`) and anything else the writer wants to record. Writes are atomic
(temporary file, then rename), so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import save_file

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


def load(path: str | Path, skip: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict, dict[str, str]]:
    """Read a checkpoint: (tensors, config dict, other metadata). Raises CheckpointError.

    `skip`: name prefixes of tensors not to read at all (a compact file's base brings only what it shares)."""
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
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:  # one opening for tensors and metadata
            tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith(skip)}  # startswith(()) is False
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
    if "shared_from" in meta:
        tensors = _with_shared(path, tensors, meta)
    if meta.get("weights") == "int8":
        tensors = unpack_int8(tensors)
    return tensors, config, meta


# ---------------------------------------------------------------------- compact files
# A checkpoint may store its 2-D weights as int8 with one scale per row (meta `weights: int8`),
# and may leave out tensors it shares with another checkpoint (meta `shared_from`: that file's
# name, found beside it or among the bundled weights; `shared_sha256`: the shared tensors' hash).
# `load` undoes both, so every reader sees plain floating-point tensors. A few-step student
# ships this way: its DiT in int8, the VAE read from the bundled model it was distilled from.
INT8, SCALE = ".int8", ".int8_scale"


def pack_int8(
    tensors: dict[str, torch.Tensor], keep: tuple[str, ...] = (), convolutions: bool = False
) -> dict[str, torch.Tensor]:
    """Every floating 2-D tensor (not under a prefix in `keep`) as int8 rows + one fp32 scale per row; others bf16.

    `convolutions` packs kernels too (3-D and up), one scale per output channel (their first axis)."""
    from tessera.models.quant import quantize_rows

    out = {}
    for k, v in tensors.items():
        if v.is_floating_point() and (v.dim() == 2 or (convolutions and v.dim() > 2)) and not k.startswith(keep):
            q, out[k + SCALE] = quantize_rows(v.reshape(len(v), -1))  # the same rows-times-scale as Int8Linear
            out[k + INT8] = q.reshape(v.shape)
        else:
            out[k] = v.to(torch.bfloat16) if v.is_floating_point() else v
    return out


def unpack_int8(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What `pack_int8` wrote, with every int8 tensor back in fp32 (row · scale, for kernels per output channel)."""
    out = {k: v for k, v in tensors.items() if not k.endswith((INT8, SCALE))}
    for k, q in tensors.items():
        if k.endswith(INT8):
            name = k[: -len(INT8)]
            scale = tensors[name + SCALE].float()
            out[name] = q.float() * scale.reshape(-1, *[1] * (q.dim() - 1))
    return out


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for k in sorted(tensors):
        v = tensors[k].contiguous()
        digest.update(f"{k}|{v.dtype}|{tuple(v.shape)}".encode())
        digest.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return digest.hexdigest()


def _with_shared(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, torch.Tensor]:
    name = Path(meta["shared_from"]).name
    base = next((p for p in (path.with_name(name), bundled_path().with_name(name)) if p.is_file()), None)
    if base is None or base.resolve() == path.resolve():
        raise CheckpointError(
            f"checkpoint {path} reads its shared tensors from {name}, which is not beside it or among the bundled "
            "weights; put that file beside it"
        )
    shared, _, base_meta = load(base, skip=_own_prefixes(tensors))  # the base's own DiT is not even read
    if "shared_from" in base_meta:
        raise CheckpointError(f"{base}, the base of {path}, shares tensors itself; point at a complete checkpoint")
    if meta.get("shared_sha256") and tensors_sha256(shared) != meta["shared_sha256"]:
        raise CheckpointError(
            f"{base} is not the checkpoint {path} was made beside (its shared tensors differ); use the matching file"
        )
    return {**shared, **tensors}


def _own_prefixes(tensors: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """The top-level prefixes ('dit.', ...) a compact file brings itself: the base's tensors under them are not used."""
    return tuple(sorted({k.split(".", 1)[0] + "." for k in tensors}))


def save_beside(
    path: str | Path, tensors: dict[str, torch.Tensor], config: dict, base: str | Path, *, int8_keep=(), **meta: str
) -> None:
    """Write only the tensors under prefixes that differ from `base` (int8 where 2-D), naming `base` for the rest."""
    base_tensors, _, _ = load(base)
    own = {
        k.split(".", 1)[0] for k, v in tensors.items() if k not in base_tensors or not torch.equal(v, base_tensors[k])
    }
    mine = {k: v for k, v in tensors.items() if k.split(".", 1)[0] in own}
    shared = {k: v for k, v in base_tensors.items() if not k.startswith(_own_prefixes(mine))}
    meta = {**meta, "shared_from": Path(base).name, "shared_sha256": tensors_sha256(shared), "weights": "int8"}
    save(path, pack_int8(mine, keep=int8_keep), config, **meta)


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
