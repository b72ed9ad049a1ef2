"""Small PNG line charts drawn with Pillow (no plotting library): one panel per measure, one line per series."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

SERIES_COLOURS = ((40, 110, 220), (60, 60, 60), (220, 60, 40), (40, 160, 80), (150, 60, 190))
COLOUR_NAMES = ("blue", "black", "red", "green", "purple")
Series = dict[str, list[tuple[float, float]]]  # series name -> (x, y) points, y in [0, 1]


def _panel(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str, series: Series, colours: dict[str, tuple]
) -> None:
    """One panel: y from 0 to 100 (%), x ticks at the points' x values, a line and dots per series."""
    xs = sorted({x for pts in series.values() for x, _ in pts}) or [0.0]
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(180, 180, 180))
    draw.text((x0, y0 - 18), title, fill="black")
    lo, hi = min(xs), max(xs)
    span = (hi - lo) or 1.0

    def px(x: float, y: float) -> tuple[float, float]:
        return x0 + 8 + (x - lo) / span * (x1 - x0 - 16), y1 - y * (y1 - y0)

    for v in (0.0, 0.5, 0.75, 1.0):
        draw.line([x0, px(lo, v)[1], x1, px(lo, v)[1]], fill=(230, 230, 230))
        draw.text((x0 - 28, px(lo, v)[1] - 6), f"{v * 100:.0f}", fill="gray")
    for x in xs:
        draw.text((px(x, 0)[0] - 6, y1 + 3), f"{x:g}", fill="gray")
    for name, pts in series.items():
        col = colours[name]
        xy = [px(x, y) for x, y in sorted(p for p in pts if p[1] is not None)]
        if len(xy) > 1:
            draw.line(xy, fill=col, width=2)
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col)


def line_panels(path: Path, panels: dict[str, Series], xlabel: str, panel_px: tuple[int, int] = (260, 220)) -> None:
    """Write a PNG with one panel per entry of `panels` (title -> series), y in % and x labelled `xlabel`."""
    pw, ph = panel_px
    img = Image.new("RGB", (pw * max(1, len(panels)), ph + 50), "white")
    draw = ImageDraw.Draw(img)
    names = list(dict.fromkeys(n for series in panels.values() for n in series))
    colours = {n: SERIES_COLOURS[k % len(SERIES_COLOURS)] for k, n in enumerate(names)}
    for p, (title, series) in enumerate(panels.items()):
        _panel(draw, (p * pw + 40, 25, (p + 1) * pw - 10, ph - 10), f"{title} (%)", series, colours)
    legend = "   ".join(f"{n}: {COLOUR_NAMES[k % len(COLOUR_NAMES)]}" for k, n in enumerate(names))
    draw.text((40, ph + 15), f"x: {xlabel}     {legend}", fill="black")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
