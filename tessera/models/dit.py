"""Diffusion Transformer over spacetime patches.

Input: a noisy latent (B, C, T, H, W), the flow time t in [0, 1] (1 = pure noise) and the
text embedding. Output: the predicted velocity, same shape as the latent.

* Global attention: every block attends over all T·H·W/patch tokens of the clip at once.
* Positions: 3D rotary embedding (RoPE) on queries and keys; the head dimension is split
  between time, y and x, so any grid size works.
* Text: cross-attention to the token embeddings, plus the pooled embedding added to the
  timestep embedding (global conditioning through adaLN).
* Timestep: adaLN-single (PixArt-α): one projection of the conditioning vector shared by
  all blocks plus a learned per-block offset; gates start at zero, so a fresh model
  outputs zero whatever the text (see `initialize_weights`).
* QK-norm (RMS) in every attention; attention via `scaled_dot_product_attention` or an
  explicit softmax, which is faster on CPU at these sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from tessera.config import DiTConfig
from tessera.models.patchify import grid_positions, patchify, unpatchify


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) times in [0, 1] -> (B, dim) sinusoidal features (t scaled by 1000 as in DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Rope3D(nn.Module):
    """Rotary embedding over (t, y, x) positions; returns cos/sin tables of shape (N, head_dim / 2)."""

    def __init__(self, head_dim: int, fraction_t: float, base: float = 10000.0):
        super().__init__()
        half = head_dim // 2  # number of rotated pairs
        n_t = max(1, int(round(half * fraction_t)))
        n_y = (half - n_t) // 2
        n_x = half - n_t - n_y
        self.split = (n_t, n_y, n_x)
        for name, n in zip("tyx", self.split):
            self.register_buffer(f"freq_{name}", base ** (-torch.arange(n).float() / n), persistent=False)

    def forward(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pos (N, 3) -> cos, sin each (N, head_dim / 2)."""
        angles = torch.cat([pos[:, 0:1] * self.freq_t, pos[:, 1:2] * self.freq_y, pos[:, 2:3] * self.freq_x], dim=-1)
        return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, heads, N, Dh); rotate consecutive pairs by the position's angles."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (B, h, N, Dh/2) each
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


ATTENTION_BACKENDS = ("auto", "sdpa", "math")
ATTENTION_DEFAULT = "auto"  # math (explicit softmax) for small CPU attention, else sdpa


def attention(q, k, v, mask: torch.Tensor | None, kind: str) -> torch.Tensor:
    """q (B, h, N, d), k/v (B, h, M, d), mask (B, M) bool or None -> (B, h, N, d).

    One place for the attention call, so a sequence-parallel or flash kernel can be
    swapped in without touching the blocks.
    """
    if kind == "auto":
        # on CPU the explicit softmax wins for small score matrices (256 tokens: 1.18x faster
        # training step); from ~1024 tokens SDPA is faster and never holds the (N, M) scores
        kind = "sdpa" if q.is_cuda or q.shape[-2] * k.shape[-2] >= 1024 * 1024 else "math"
    attn_mask = None if mask is None else mask[:, None, None, :]
    if kind == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (B, h, N, M)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(dim=-1).to(v.dtype) @ v


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, kind: str):
        super().__init__()
        self.heads, self.kind = heads, kind
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm, self.k_norm = RMSNorm(dim // heads), RMSNorm(dim // heads)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        q, k = apply_rope(self.q_norm(q), *rope), apply_rope(self.k_norm(k), *rope)
        o = attention(q, k, v, None, self.kind)  # (B, h, N, d)
        return self.out(rearrange(o, "b h n d -> b n (h d)"))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, kind: str):
        super().__init__()
        self.heads, self.kind = heads, kind
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm, self.k_norm = RMSNorm(dim // heads), RMSNorm(dim // heads)
        self.out = nn.Linear(dim, dim)

    def keys_values(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """text (B, L, D) -> normalised keys and values, each (B, h, L, d): the same at every denoising step."""
        k, v = rearrange(self.kv(text), "b m (two h d) -> two b h m d", two=2, h=self.heads)
        return self.k_norm(k), v

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, D), kv from `keys_values`, mask (B, L) -> (B, N, D)."""
        q = self.q_norm(rearrange(self.q(x), "b n (h d) -> b h n d", h=self.heads))
        o = attention(q, *kv, mask, self.kind)  # (B, h, N, d)
        return self.out(rearrange(o, "b h n d -> b n (h d)"))


@dataclass
class TextKV:
    """Every block's cross-attention keys and values for a batch of prompts (`DiT.prepare_text`).

    The text does not change during a generation, so these are computed once and reused
    at every step (the "KV-cache" of R20); `mask` (B, L) marks the real tokens.
    """

    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per block: k, v each (B, heads, L, head_dim)
    mask: torch.Tensor


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.width
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(d, cfg.heads, ATTENTION_DEFAULT)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.cross = CrossAttention(d, cfg.heads, ATTENTION_DEFAULT)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.mod_offset = nn.Parameter(torch.zeros(6, d))  # per-block adaLN-single offset

    def forward(self, x, mod, text, text_mask, rope):
        """x (B, N, D); mod (B, 1 or N, 6, D) shared modulation (one per clip, or per token); text this
        block's (k, v) from `DiT.prepare_text`, or the embedded text (B, L, D) to make them from here
        (under FSDP a block's weights are gathered only inside its forward); text_mask (B, L)."""
        text_kv = self.cross.keys_values(text) if isinstance(text, torch.Tensor) else text
        shift1, scale1, gate1, shift2, scale2, gate2 = (mod + self.mod_offset).unbind(2)  # each (B, 1 or N, D)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.attn(h, rope)
        x = x + self.cross(self.norm2(x), text_kv, text_mask)
        h = self.norm3(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.patch = (cfg.patch_t, cfg.patch_hw, cfg.patch_hw)
        token_dim = cfg.in_channels * cfg.patch_t * cfg.patch_hw**2
        self.x_embed = nn.Linear(token_dim, d)
        self.t_embed = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.pooled_embed = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.text_embed = nn.Sequential(nn.Linear(cfg.text_dim, d), RMSNorm(d))
        self.mod = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.rope = Rope3D(d // cfg.heads, cfg.rope_fraction_t)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_mod = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.final = nn.Linear(d, token_dim)
        self.gradient_checkpointing = False
        self.initialize_weights()

    # ------------------------------------------------------------------ runtime switches (not saved)
    def set_attention_backend(self, kind: str) -> DiT:
        """ "auto", "sdpa" or "math" for every attention layer."""
        if kind not in ATTENTION_BACKENDS:
            raise ValueError(f"attention backend {kind!r} is not one of {', '.join(ATTENTION_BACKENDS)}")
        for block in self.blocks:
            block.attn.kind = block.cross.kind = kind
        return self

    def enable_gradient_checkpointing(self, enabled: bool = True) -> DiT:
        """Recompute each block's activations in the backward pass: less memory, ~30% more compute."""
        self.gradient_checkpointing = enabled
        return self

    # ------------------------------------------------------------------ pretrained folders
    def save_pretrained(self, folder) -> None:
        from tessera.pretrained import save_component

        save_component(folder, self, self.cfg)

    @classmethod
    def from_pretrained(cls, folder) -> DiT:
        from tessera.config import DiTConfig, build_config
        from tessera.pretrained import load_component

        return load_component(folder, lambda d: cls(build_config(DiTConfig, d)))

    def initialize_weights(self) -> None:
        """Xavier for linears; zero for the adaLN projections and the output, so a fresh model is zero."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.t_embed[0].weight, std=0.02)
        nn.init.normal_(self.t_embed[2].weight, std=0.02)
        for lin in (self.mod[1], self.final_mod[1], self.final):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def prepare_text(self, text_tokens: torch.Tensor, text_mask: torch.Tensor) -> TextKV:
        """text_tokens (B, L, Dt), text_mask (B, L) -> every block's cross-attention keys and values.

        Pass the result as `text_kv` to `forward` at every step of a generation; the output
        is the same as recomputing them from the tokens (same operations, same order).
        """
        text = self.text_embed(text_tokens)  # (B, L, D)
        return TextKV([block.cross.keys_values(text) for block in self.blocks], text_mask)

    def forward(
        self,
        z: torch.Tensor,
        t: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        text_pooled: torch.Tensor,
        text_kv: TextKV | None = None,
    ) -> torch.Tensor:
        """z (B, C, T, H, W), t (B,) or (B, N), text_tokens (B, L, Dt), text_mask (B, L), text_pooled (B, Dt)
        -> (B, C, T, H, W).

        t (B, N) gives every token its own flow time (tokens in `patchify` order): conditioning
        tokens of an edit are clean (t = 0) or partly noised while the rest are denoised.
        `text_kv` (from `prepare_text` on the same tokens) skips recomputing the text keys and values.
        """
        b, _, tt, hh, ww = z.shape
        grid = (tt // self.patch[0], hh // self.patch[1], ww // self.patch[2])
        x = self.x_embed(patchify(z, self.patch))  # (B, N, D)
        cond = self._conditioning(t, text_pooled)  # (B, 1 or N, D)
        mod = self.mod(cond).unflatten(-1, (6, -1))  # (B, 1 or N, 6, D)
        if text_kv is None:  # each block makes its keys and values from the embedded text, in its own forward
            texts, mask = [self.text_embed(text_tokens)] * len(self.blocks), text_mask  # (B, L, D) each
        else:
            texts, mask = text_kv.kv, text_kv.mask
        rope = self.rope(grid_positions(grid, device=z.device))  # cos, sin (N, Dh/2)
        for block, text in zip(self.blocks, texts):
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, mod, text, mask, rope, use_reentrant=False)
            else:
                x = block(x, mod, text, mask, rope)
        shift, scale = self.final_mod(cond).chunk(2, dim=-1)  # (B, 1 or N, D) each
        x = self.final_norm(x) * (1 + scale) + shift
        return unpatchify(self.final(x), grid, self.patch).float()  # (B, C, T, H, W)

    def _conditioning(self, t: torch.Tensor, text_pooled: torch.Tensor) -> torch.Tensor:
        """Timestep plus pooled text: (B, 1, D) for one time per clip, (B, N, D) for per-token times.

        Per-token times take few distinct values (the clip's time and the conditioning levels),
        so each distinct time is embedded once and the result gathered per token.
        """
        pooled = self.pooled_embed(text_pooled)[:, None]  # (B, 1, D)
        if t.dim() == 1:
            return self.t_embed(timestep_embedding(t, 256))[:, None] + pooled
        times, index = torch.unique(t, return_inverse=True)  # (U,), (B, N)
        return self.t_embed(timestep_embedding(times, 256))[index] + pooled
