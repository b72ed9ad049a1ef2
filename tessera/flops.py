"""Model FLOPs of the DiT and the measured matmul peak of a machine, for MFU.

A multiply-add counts as 2 FLOPs. Only matrix products are counted (every linear layer,
attention scores and the attention-weighted sum); norms, activations, RoPE and softmax
are left out, as is usual for MFU. A training step costs 3× the forward pass (the
backward computes a gradient for both the input and the weight of every product).
"""

from __future__ import annotations

import time

import torch

from tessera.config import DiTConfig


def dit_forward_flops(cfg: DiTConfig, tokens: int, text_tokens: int) -> float:
    """FLOPs of one DiT forward pass for one clip of `tokens` video and `text_tokens` text tokens."""
    d, n, m = cfg.width, tokens, text_tokens
    hidden = int(d * cfg.mlp_ratio)
    token_dim = cfg.in_channels * cfg.patch_t * cfg.patch_hw**2

    self_attn = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d  # qkv, scores + weighted sum, out
    cross_attn = 2 * n * d * d + 2 * m * d * 2 * d + 2 * 2 * n * m * d + 2 * n * d * d  # q, kv, attention, out
    mlp = 2 * 2 * n * d * hidden
    per_block = self_attn + cross_attn + mlp  # the per-block adaLN is an added offset, no product

    embed = 2 * n * token_dim * d  # patch embedding
    embed += 2 * (256 * d + d * d)  # timestep MLP
    embed += 2 * (cfg.text_dim * d + d * d)  # pooled-text MLP
    embed += 2 * m * cfg.text_dim * d  # text-token projection
    embed += 2 * d * 6 * d  # shared adaLN modulation
    head = 2 * d * 2 * d + 2 * n * d * token_dim  # final adaLN and output projection
    return float(cfg.depth * per_block + embed + head)


def dit_train_flops(cfg: DiTConfig, tokens: int, text_tokens: int) -> float:
    """FLOPs of one forward + backward pass for one clip (3× the forward)."""
    return 3 * dit_forward_flops(cfg, tokens, text_tokens)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_flops(
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    sizes: tuple[int, ...] = (2048, 3072, 4096),
    seconds: float = 1.0,
) -> float:
    """Best FLOP/s of square matmuls of the given sizes, each run for about `seconds` after one warm-up."""
    device = torch.device(device)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        a @ b  # warm-up: kernel selection, page faults
        _sync(device)
        chunk = 10 if device.type == "cuda" else 1  # products queued between clock reads
        runs, t0 = 0, time.perf_counter()
        while runs == 0 or time.perf_counter() - t0 < seconds:
            for _ in range(chunk):
                a @ b
            _sync(device)
            runs += chunk
        elapsed = time.perf_counter() - t0
        best = max(best, 2 * n**3 * runs / elapsed)
    return best
