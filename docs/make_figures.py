"""Draw the figures of docs/ARCHITECTURE.md from the code's own components.

    python docs/make_figures.py        # writes docs/flow.png and docs/patches.png

The flow figure reads its numbers from the bundled model's configuration (sizes, channels,
patch); the patches figure renders a real clip of the shapes world and the grid that the
bundled VAE and DiT cut it into.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

OUT = Path(__file__).parent
INK, MUTED, ACCENT, PAPER = (30, 30, 40), (110, 110, 125), (214, 90, 40), (250, 250, 247)


def font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def box(d: ImageDraw.ImageDraw, xy: tuple[int, int, int, int], title: str, module: str, shape: str = "") -> None:
    d.rounded_rectangle(xy, radius=10, outline=INK, width=2, fill=(255, 255, 255))
    x0, y0, x1, _ = xy
    cx = (x0 + x1) // 2
    d.text((cx, y0 + 16), title, fill=INK, font=font(17), anchor="mm")
    d.text((cx, y0 + 38), module, fill=ACCENT, font=font(12), anchor="mm")
    if shape:
        d.text((cx, y0 + 58), shape, fill=MUTED, font=font(12), anchor="mm")


def grid(d: ImageDraw.ImageDraw, side: int, step: int) -> None:
    """White patch lines every `step` px over a square image of `side` px."""
    for v in range(0, side, step):
        d.line([(v, 0), (v, side - 1)], fill=(255, 255, 255), width=1)
        d.line([(0, v), (side - 1, v)], fill=(255, 255, 255), width=1)


def arrow(d: ImageDraw.ImageDraw, a: tuple[int, int], b: tuple[int, int], label: str = "") -> None:
    d.line([a, b], fill=INK, width=2)
    (ax, ay), (bx, by) = a, b
    v = np.array([bx - ax, by - ay], dtype=float)
    v /= np.linalg.norm(v) + 1e-9
    n = np.array([-v[1], v[0]])
    tip = np.array([bx, by])
    d.polygon([tuple(tip), tuple(tip - 10 * v + 5 * n), tuple(tip - 10 * v - 5 * n)], fill=INK)
    if label:
        d.text(((ax + bx) // 2, (ay + by) // 2 - 10), label, fill=MUTED, font=font(12), anchor="mm")


def flow_figure() -> Image.Image:
    """The one-way flow text -> latent -> patches -> DiT -> scheduler -> VAE -> watermark -> MP4."""
    from tessera.pipeline import TesseraPipeline

    pipe = TesseraPipeline.from_single_file(device="cpu")
    geo, cfg = pipe.geometry, pipe.config
    frames = geo.frames_for(cfg.duration_s, cfg.fps)
    c, t, h, w = geo.latent_shape(frames, cfg.height_px, cfg.width_px)
    tokens = geo.tokens(frames, cfg.height_px, cfg.width_px)
    img = Image.new("RGB", (1500, 470), PAPER)
    d = ImageDraw.Draw(img)
    d.text((20, 14), "tessera/pipeline.py: TesseraPipeline.__call__, one way, left to right", fill=INK, font=font(18))
    bw, bh, y = 170, 74, 250
    row = [
        ("noise latent", "torch.randn(seed)", f"({c}, {t}, {h}, {w})"),
        ("patchify", "models/patchify.py", f"{tokens} tokens"),
        ("DiT", "models/dit.py", "global attention"),
        ("scheduler.step", "schedulers/", "25 steps (default)"),
        ("VAE decode", "models/vae.py", f"({frames}, {cfg.height_px}, {cfg.width_px}, 3)"),
        ("watermark", "safety/watermarker.py", "model + generation id"),
        ("MP4, then ledger", "export.py", "H.264 yuv420p"),
    ]
    xs = [20 + i * (bw + 42) for i in range(len(row))]
    for x, (title, module, shape) in zip(xs, row):
        box(d, (x, y, x + bw, y + bh), title, module, shape)
    for a, b in zip(xs, xs[1:]):
        arrow(d, (a + bw, y + bh // 2), (b, y + bh // 2))
    # the denoising loop: scheduler back to patchify (unpatchify -> latent -> patchify again)
    sx, px = xs[3] + bw // 2, xs[1] + bw // 2
    d.line([(sx, y + bh), (sx, y + bh + 40), (px, y + bh + 40)], fill=MUTED, width=2)
    arrow(d, (px, y + bh + 40), (px, y + bh + 2))
    d.text(
        ((sx + px) // 2, y + bh + 54),
        "next step: unpatchify, update the latent, patchify again",
        fill=MUTED,
        font=font(12),
        anchor="mm",
    )
    # text conditioning enters the DiT from above
    tx = xs[2]
    box(d, (tx - 230, 70, tx - 60, 70 + bh), "prompt", "(the user's words)", "checked + filtered first")
    box(d, (tx, 70, tx + bw, 70 + bh), "text encoder", "models/text.py", f"(L, {cfg.dit.text_dim}) + pooled")
    arrow(d, (tx - 60, 70 + bh // 2), (tx, 70 + bh // 2))
    arrow(d, (tx + bw // 2, 70 + bh), (tx + bw // 2, y), "TextEmbedding")
    d.text(
        (20, 430),
        f"Sizes come from one Geometry (geometry.py): sides multiple of {geo.unit_px} px, frames 1 + {geo.frame_step}k.",
        fill=MUTED,
        font=font(13),
    )
    return img


def patches_figure() -> Image.Image:
    """ViT image patches on one frame vs the DiT's spacetime patches over a real clip."""
    from tessera.data.world import render, spec_for
    from tessera.models.autoencoder import load_video_vae

    vae = load_video_vae()
    spec = spec_for("white", "triangle", "right", "navy", seed=3)
    frames = render(spec, 17, 256, 256)  # (17, 256, 256, 3)
    s, tf, p = vae.spatial_factor, vae.temporal_factor, 2  # bundled DiT patch 2x2 latent cells
    tok_px = s * p
    img = Image.new("RGB", (1500, 470), PAPER)
    d = ImageDraw.Draw(img)
    d.text((20, 14), "Image patches (ViT) vs spacetime patches (this DiT), on a real 2 s clip", fill=INK, font=font(18))
    # left: a ViT cuts one image into 16 x 16 px patches
    frame = Image.fromarray(frames[0])
    fd = ImageDraw.Draw(frame)
    grid(fd, 256, 16)
    img.paste(frame, (20, 90))
    d.text((20, 360), "ViT: one image, 16 x 16 px patches", fill=INK, font=font(14))
    d.text((20, 382), f"{(256 // 16) ** 2} tokens per image, no time axis", fill=MUTED, font=font(13))
    # right: the clip, each latent frame = the first frame, then groups of 4; one token = 32 x 32 px x 4 frames
    groups = [[0]] + [list(range(1 + k * tf, 1 + (k + 1) * tf)) for k in range((17 - 1) // tf)]
    x0 = 330
    for g, idx in enumerate(groups):
        shown = Image.fromarray(frames[idx[-1]]).resize((200, 200))
        sd = ImageDraw.Draw(shown)
        step = 200 * tok_px // 256
        grid(sd, 200, step)
        hx, hy = 3 * step, 3 * step
        sd.rectangle([hx, hy, hx + step, hy + step], outline=ACCENT, width=3)
        x = x0 + g * 230
        img.paste(shown, (x, 110))
        span = f"frame {idx[0] + 1}" if len(idx) == 1 else f"frames {idx[0] + 1}-{idx[-1] + 1}"
        d.text((x + 100, 95), f"latent frame {g + 1}: {span}", fill=INK, font=font(13), anchor="mm")
    d.text(
        (x0, 330),
        f"This DiT: the VAE turns {s} x {s} px x {tf} frames into one latent cell ({vae.latent_channels} numbers);",
        fill=INK,
        font=font(14),
    )
    d.text(
        (x0, 352),
        f"a token is {p} x {p} latent cells = {tok_px} x {tok_px} px x {tf} frames (the orange square is one token's footprint).",
        fill=INK,
        font=font(14),
    )
    t_lat = len(groups)
    n = t_lat * (256 // tok_px) ** 2
    d.text(
        (x0, 380),
        f"The whole clip is {t_lat} x {256 // tok_px} x {256 // tok_px} = {n} tokens, and every token attends to every other one:",
        fill=MUTED,
        font=font(13),
    )
    d.text(
        (x0, 400),
        "the model sees space and time at once, so the object keeps its colour, shape and path across the clip.",
        fill=MUTED,
        font=font(13),
    )
    d.text(
        (x0, 430),
        "Any clip whose sides are multiples of 32 px and whose length is 1 + 4k frames works: landscape, portrait, 1-4 s.",
        fill=MUTED,
        font=font(13),
    )
    return img


if __name__ == "__main__":
    flow_figure().save(OUT / "flow.png")
    patches_figure().save(OUT / "patches.png")
    print(f"wrote {OUT / 'flow.png'} and {OUT / 'patches.png'}")
