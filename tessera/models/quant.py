"""8-bit weights for inference: weight-only int8 linears with one scale per output channel.

`quantize_int8(dit)` replaces the DiT's `nn.Linear` layers in place by `Int8Linear`,
from the weights already loaded (the bundled checkpoint; no second file). Activations
stay in the compute dtype (bf16 under autocast): on the CPU the product runs in
PyTorch's int8-weight kernel (`torch._weight_int8pack_mm`, as torchao's weight-only
int8 does), elsewhere the weight is dequantised per call. Weight memory of the
replaced layers drops 4× against fp32 (2× against bf16).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

KEEP_FULL_PRECISION = ("x_embed", "final")  # first and last layer: tiny, and closest to the latent


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per row: w (rows, cols) -> (int8 (rows, cols), fp32 scale (rows,))."""
    w = w.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    return (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


class Int8Linear(nn.Module):
    """y = x · (scale ⊙ W_int8)ᵀ + b; W_int8 (out, in) int8, scale (out,) fp32, symmetric per output channel."""

    def __init__(self, weight_int8: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight_int8.shape[1], weight_int8.shape[0]
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        q, scale = quantize_rows(linear.weight)  # (out, in), (out,)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        return cls(q, scale, bias)

    def dequantized(self) -> torch.Tensor:
        """(out, in) fp32 weight this layer computes with."""
        return self.weight_int8.float() * self.scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        x = x.to(dtype)
        if x.device.type == "cpu":
            flat = x.reshape(-1, self.in_features).contiguous()  # (M, in)
            y = torch._weight_int8pack_mm(flat, self.weight_int8, self.scale.to(dtype))  # (M, out)
            y = y.reshape(*x.shape[:-1], self.out_features)
            return y if self.bias is None else y + self.bias.to(dtype)
        w = self.weight_int8.to(dtype) * self.scale.to(dtype)[:, None]
        return F.linear(x, w, None if self.bias is None else self.bias.to(dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight"


def quantize_int8(model: nn.Module, keep: tuple[str, ...] = KEEP_FULL_PRECISION) -> nn.Module:
    """Replace every `nn.Linear` of `model` (except the top-level children named in `keep`) by `Int8Linear`, in place."""
    replaced = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and full not in keep:
                setattr(module, child_name, Int8Linear.from_linear(child))
                replaced += 1
    log.info("int8 weights: %d linear layers quantised", replaced)
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (its weights at rest)."""
    tensors = list(model.parameters()) + [b for b in model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
