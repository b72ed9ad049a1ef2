import os

import numpy as np
import pytest
import torch

from tessera import checkpoint
from tessera.config import PRESETS, to_dict
from tessera.models.dit import DiT
from tessera.models.vae import VideoVAE
from tessera.training import generator_tensors


@pytest.fixture(autouse=True, scope="session")
def _tessera_home(tmp_path_factory):
    """Ledger and keys of the test session go to a temporary TESSERA_HOME, never the user's ~/.tessera."""
    old = os.environ.get("TESSERA_HOME")
    os.environ["TESSERA_HOME"] = str(tmp_path_factory.mktemp("tessera_home"))
    yield
    if old is None:
        os.environ.pop("TESSERA_HOME", None)
    else:
        os.environ["TESSERA_HOME"] = old


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised tiny generation checkpoint (VAE + DiT), with a non-zero output layer."""
    cfg = PRESETS["tiny"]
    torch.manual_seed(0)
    vae, dit = VideoVAE(cfg.vae), DiT(cfg.dit)
    with torch.no_grad():
        for p in (dit.final.weight, dit.mod[1].weight, dit.final_mod[1].weight):
            p.normal_(0, 0.02)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    checkpoint.save(path, generator_tensors(vae, dit), to_dict(cfg), kind="generator", name="tiny")
    return path
