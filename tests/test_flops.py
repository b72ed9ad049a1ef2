"""The DiT FLOP count against what torch's FlopCounterMode sees the model actually run."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tessera.config import PRESETS
from tessera.flops import dit_forward_flops, dit_train_flops, matmul_peak_flops
from tessera.models.dit import DiT

CFG = PRESETS["tiny"].dit
TEXT_TOKENS = 8


def counted_flops(grid: tuple[int, int, int], backward: bool = False) -> int:
    """FLOPs FlopCounterMode records for one DiT forward (and backward) on a latent whose token grid is `grid`."""
    torch.manual_seed(0)
    model = DiT(CFG).set_attention_backend("math")  # the counter does not see the CPU sdpa kernel
    t, h, w = grid
    z = torch.randn(1, CFG.in_channels, t * CFG.patch_t, h * CFG.patch_hw, w * CFG.patch_hw)
    cond = {
        "text_tokens": torch.randn(1, TEXT_TOKENS, CFG.text_dim),
        "text_mask": torch.ones(1, TEXT_TOKENS, dtype=torch.bool),
        "text_pooled": torch.randn(1, CFG.text_dim),
    }
    with FlopCounterMode(display=False) as counter:
        out = model(z, torch.rand(1), **cond)
        if backward:
            out.square().mean().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("grid", [(1, 4, 4), (2, 4, 8)])
def test_forward_count_matches_counter(grid):
    tokens = grid[0] * grid[1] * grid[2]
    assert dit_forward_flops(CFG, tokens, TEXT_TOKENS) == counted_flops(grid)  # every product, to the FLOP


def test_train_count_matches_counter():
    # Slightly less is measured: no gradient is computed for the inputs of the first layers.
    grid = (2, 4, 4)
    measured = counted_flops(grid, backward=True)
    assert dit_train_flops(CFG, 32, TEXT_TOKENS) == pytest.approx(measured, rel=0.05)


def test_attention_is_quadratic_in_tokens():
    # f(n) = a + b·n + c·n²  =>  f(3n) - 2·f(2n) + f(n) = 2c·n²; c = 2·2·width per block (scores, weighted sum)
    f = [counted_flops((k, 4, 4)) for k in (1, 2, 3)]
    n = 16
    assert f[2] - 2 * f[1] + f[0] == 2 * (4 * CFG.width * CFG.depth) * n**2


def test_matmul_peak_is_positive_and_plausible():
    peak = matmul_peak_flops(torch.float32, "cpu", sizes=(256,), seconds=0.05)
    assert 1e8 < peak < 1e15
