"""The networks: text encoder, video VAE, DiT; `without_init` for building one whose weights are loaded next."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

import torch

_local = threading.local()


@contextlib.contextmanager
def without_init() -> Iterator[None]:
    """Inside, in this thread only, `torch.nn.init`'s functions leave tensors as they are.

    For a module built only to have every weight loaded into it (`load_state_dict`, strict):
    its random initialisation, a fifth of a second for the bundled DiT and VAE, is skipped.
    Other threads building modules meanwhile are initialised as usual.
    """
    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(torch.nn.init, n) for n in names}

    def skipping(original):
        @functools.wraps(original)
        def init(tensor, *args, **kwargs):
            return tensor if getattr(_local, "skip", False) else original(tensor, *args, **kwargs)

        return init

    for n, f in saved.items():
        setattr(torch.nn.init, n, skipping(f))
    _local.skip = True
    try:
        yield
    finally:
        _local.skip = False
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)
