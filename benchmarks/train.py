"""Training throughput of Tessera's DiT against diffusers' Wan transformer of the same size.

Both models: width 384 (6 heads × 64), depth 6, MLP 4×, 16 latent channels, patch 1×2×2,
32 text tokens of width 384, QK RMS-norm, cross-attention to the text. One training step is
the rectified-flow loss (`tessera.diffusion.flow.flow_loss`) under bf16 autocast, backward
and an AdamW step. Steps of the models are interleaved (tessera-math, tessera-sdpa, wan,
tessera-math, ...) so that machine noise hits all of them alike; the median is reported.

Token counts map to latent shapes T × H × W with 8 × 8 tokens per frame below 1024 tokens
and 16 × 16 from 1024 on: 256 → 4×16×16, 1024 → 4×32×32, 4096 → 16×32×32 (with Tessera's
VAE, ×16 in space and ×4 in time: 13 frames at 256 px, 13 frames at 512 px, 61 frames at 512 px).
Each step holds about `--tokens-per-step` tokens (batch = tokens-per-step / tokens, at least 1).

MFU = model FLOPs per second / the machine's measured bf16 matmul peak. Tessera's FLOPs come
from `tessera.flops`; Wan's from FlopCounterMode on one forward (math attention, so that the
attention products are seen) × 3. Peak memory: each model trains two steps in a fresh process
(peak RSS on CPU, max allocated on CUDA).

Parameters (16.13 M vs 15.69 M): the blocks match to 0.1 % (Wan's QK norm spans all heads);
outside the blocks Tessera has a pooled-text MLP and a learned final adaLN projection, Wan a
two-layer text projection and a fixed final shift/scale table.

    python benchmarks/train.py [--tokens 256 1024 4096] [--steps 10] [--warmup 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import diffusers
import torch
from diffusers import WanTransformer3DModel
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tessera.config import DiTConfig
from tessera.diffusion.flow import flow_loss
from tessera.flops import dit_train_flops, matmul_peak_flops
from tessera.models.dit import DiT

MODELS = ("tessera-math", "tessera-sdpa", "wan")
TEXT_TOKENS = 32
CFG = DiTConfig()  # the small preset: width 384, depth 6, heads 6


class WanAsDenoiser(nn.Module):
    """Wan with Tessera's denoiser signature; it takes t in [0, 1000] and neither mask nor pooled text."""

    def __init__(self):
        super().__init__()
        self.wan = WanTransformer3DModel(
            patch_size=(CFG.patch_t, CFG.patch_hw, CFG.patch_hw),
            num_attention_heads=CFG.heads,
            attention_head_dim=CFG.width // CFG.heads,
            in_channels=CFG.in_channels,
            out_channels=CFG.in_channels,
            text_dim=CFG.text_dim,
            freq_dim=256,  # as Tessera's timestep features
            ffn_dim=int(CFG.width * CFG.mlp_ratio),
            num_layers=CFG.depth,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
        )
        self.blocks = self.wan.blocks

    def forward(self, z, t, text_tokens, text_mask, text_pooled):
        return self.wan(z, 1000 * t, text_tokens, return_dict=False)[0]


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "wan":
        return WanAsDenoiser()
    return DiT(CFG).set_attention_backend(name.removeprefix("tessera-"))


def latent_shape(tokens: int) -> tuple[int, int, int]:
    side = 16 if tokens >= 1024 else 8  # tokens per frame edge
    if tokens % side**2:
        raise ValueError(f"--tokens {tokens} is not a multiple of {side}×{side} tokens per frame; try {side**2 * 4}")
    return tokens // side**2, side * CFG.patch_hw, side * CFG.patch_hw


def make_batch(tokens: int, batch: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    shape = (batch, CFG.in_channels, *latent_shape(tokens))
    cond = {
        "text_tokens": torch.randn(batch, TEXT_TOKENS, CFG.text_dim, generator=g),
        "text_mask": torch.ones(batch, TEXT_TOKENS, dtype=torch.bool),
        "text_pooled": torch.randn(batch, CFG.text_dim, generator=g),
    }
    data = {"x0": torch.randn(shape, generator=g), "noise": torch.randn(shape, generator=g), "t": torch.rand(batch)}
    data = {k: v.to(device) for k, v in data.items()}
    return {**data, "cond": {k: v.to(device) for k, v in cond.items()}}


def train_step(model: nn.Module, opt: torch.optim.Optimizer, data: dict, device: torch.device) -> float:
    """One forward + backward + AdamW step; returns wall seconds."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = flow_loss(model, data["x0"], data["cond"], data["t"], data["noise"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def train_flops_per_clip(name: str, model: nn.Module, tokens: int, device: torch.device) -> float:
    if name.startswith("tessera"):
        return dit_train_flops(CFG, tokens, TEXT_TOKENS)
    data = make_batch(tokens, 1, device)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(data["x0"], data["t"], **data["cond"])
    return 3.0 * counter.get_total_flops()


def param_counts(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    blocks = sum(p.numel() for p in model.blocks.parameters())
    return {"total": total, "blocks": blocks, "embeddings_and_head": total - blocks}


def peak_memory_mb(name: str, tokens: int, batch: int, device: torch.device) -> float:
    """Train two steps of one model in this process (fresh, see `--probe`) and return its peak memory."""
    model = build(name).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = make_batch(tokens, batch, device)
    for _ in range(2):
        train_step(model, opt, data, device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    status = Path("/proc/self/status").read_text().split("\n")
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024  # kB -> MB


def probe_in_subprocess(name: str, tokens: int, batch: int, device: str) -> float | None:
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
    cmd = [
        sys.executable,
        __file__,
        "--probe",
        name,
        "--tokens",
        str(tokens),
        "--batch",
        str(batch),
        "--device",
        device,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:  # keep the timings: report the failure instead of losing the run
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  peak-memory probe of {name} at {tokens} tokens failed: {reason}", flush=True)
        return None
    return float(done.stdout.strip().splitlines()[-1])


COLUMNS = ("tokens", "latent", "batch", "model", "step s", "tokens/s", "TFLOP/s", "MFU", "mem MB", "vs wan")
WIDTHS = (6, 9, 5, 13, 7, 9, 7, 6, 7, 6)


def print_row(values) -> None:
    print(" ".join(f"{v:<{w}}" if i == 3 else f"{v:>{w}}" for i, (v, w) in enumerate(zip(values, WIDTHS))))


def machine_info(device: torch.device) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu or platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, nargs="+", default=[256, 1024, 4096], help="video tokens per clip")
    ap.add_argument("--tokens-per-step", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=10, help="measured steps per model")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out", default="benchmarks/results/train.json")
    ap.add_argument("--quick", action="store_true", help="a short matmul-peak measurement, to check the script")
    ap.add_argument("--probe", choices=MODELS, help=argparse.SUPPRESS)  # internal: peak memory of one model
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.probe:
        print(peak_memory_mb(args.probe, args.tokens[0], args.batch, device))
        return

    # 1. the machine's bf16 matmul peak
    peak = matmul_peak_flops(torch.bfloat16, device, **({"sizes": (512,), "seconds": 0.2} if args.quick else {}))
    print(f"bf16 matmul peak: {peak / 1e12:.3f} TFLOP/s on {machine_info(device)['device']}")

    # 2. parameter counts
    params = {name: param_counts(build(name)) for name in ("tessera-math", "wan")}
    for name, p in params.items():
        blocks, rest = p["blocks"] / 1e6, p["embeddings_and_head"] / 1e6
        print(f"{name:13s} params {p['total'] / 1e6:6.2f} M (blocks {blocks:.2f} M, embeddings and head {rest:.2f} M)")
    print(f"tessera / wan parameters: {params['tessera-math']['total'] / params['wan']['total']:.3f}")

    # 3. interleaved timing per token count
    rows = []
    for tokens in args.tokens:
        batch = max(1, args.tokens_per_step // tokens)
        data = make_batch(tokens, batch, device)
        print(f"{tokens} tokens per clip, latent {'x'.join(map(str, latent_shape(tokens)))}, batch {batch}", flush=True)
        runs = {}
        for name in MODELS:
            model = build(name).to(device)
            runs[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
            for _ in range(args.warmup):
                train_step(*runs[name], data, device)
        times = {name: [] for name in MODELS}
        for _ in range(args.steps):
            for name in MODELS:
                times[name].append(train_step(*runs[name], data, device))
        for name in MODELS:
            step_s = statistics.median(times[name])
            flops = train_flops_per_clip(name, runs[name][0], tokens, device) * batch
            rows.append(
                {
                    "model": name,
                    "tokens": tokens,
                    "latent": "x".join(map(str, latent_shape(tokens))),
                    "batch": batch,
                    "step_s": step_s,
                    "step_s_all": times[name],
                    "tokens_per_s": tokens * batch / step_s,
                    "train_flops_per_step": flops,
                    "model_tflops_per_s": flops / step_s / 1e12,
                    "mfu": flops / step_s / peak,
                }
            )
            print(f"  {name:<13} {step_s:.4f} s/step, {tokens * batch / step_s:.0f} tokens/s", flush=True)
        # peak memory in fresh processes, once this one has let go of its GPU memory
        del runs
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        for r in rows[-len(MODELS) :]:
            r["peak_memory_mb"] = probe_in_subprocess(r["model"], tokens, batch, args.device)

    # 4. table and JSON
    wan = {r["tokens"]: r["tokens_per_s"] for r in rows if r["model"] == "wan"}
    print()
    print_row(COLUMNS)
    for r in rows:
        r["tokens_per_s_vs_wan"] = r["tokens_per_s"] / wan[r["tokens"]]
        print_row(
            (r["tokens"], r["latent"], r["batch"], r["model"], f"{r['step_s']:.3f}", f"{r['tokens_per_s']:.0f}")
            + (
                f"{r['model_tflops_per_s']:.3f}",
                f"{r['mfu']:.1%}",
                f"{r['peak_memory_mb']:.0f}" if r["peak_memory_mb"] is not None else "-",
            )
            + (f"{r['tokens_per_s_vs_wan']:.2f}",)
        )
    result = {
        "benchmark": "DiT training step (flow loss, bf16 autocast, backward, AdamW): Tessera vs diffusers Wan",
        "machine": machine_info(device),
        "args": vars(args),
        "matmul_peak_bf16_flops": peak,
        "tessera_default_attention": "sdpa" if device.type == "cuda" else "math",
        "params": params,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
