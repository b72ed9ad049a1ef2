"""Editing and long videos: each task is a list of conditioning items given to the one pipeline call.

    frames, fps = read_media("in.mp4")                 # any video PyAV reads, or a PNG/JPEG/WebP image
    out = extend(pipe, "in.mp4", "the circle keeps moving left", duration_s=2)   # input + 2 s
    out = interpolate(pipe, "a.png", "b.png", "a red circle moving right")
    out = animate(pipe, "still.png", "a red circle bouncing")
    out = restyle(pipe, "in.mp4", "a blue square", strength=0.6)        # how much to change, 0..1
    out = inpaint(pipe, "in.mp4", "a green triangle", box=(64, 64, 192, 192), from_s=0.5, to_s=1.5)

Inputs are resized to cover the output size and centre-cropped (`fit_to`), at the model's
frame rate. `check_task` says what a task would refuse from the inputs' shapes alone
(`probe_media`), with the same checks the task functions make, so a server refuses a request
before it queues it exactly as the task would. None of these functions denoises: they place
frames (`ConditioningItem`) and call `pipe(...)`, so every result passes the prompt filter and
is marked and recorded like any video. A video longer than the model's window
(`config.max_duration_s`) and every `extend` are made in chunks by `generate_in_chunks`: each
chunk is conditioned on the last (or, going backwards, the first) ~1 s of what exists, and the
new frames are joined to it without repeating the context. A long text-to-video first makes a
guide (the whole prompt as one clip a quarter as long, stretched in time to the full length)
and holds every chunk near it, so the object keeps one trajectory, colour and shape over the
whole video instead of drifting chunk by chunk.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from tessera.conditioning import ConditioningItem
from tessera.errors import InputError
from tessera.export import display_turns, upright

if TYPE_CHECKING:
    from tessera.pipeline import Request, TesseraPipeline, VideoOutput

log = logging.getLogger(__name__)

TRAINED_SHAPES_PX = ((256, 256), (448, 256), (256, 448))  # (width, height) the bundled model was trained at
MAX_INPUT_SIDE_PX = 4096
MAX_INPUT_S = 600.0
MAX_INPUT_BYTES = 2 << 30  # decoded frames kept in memory at once (after picking frames at the model's fps)
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # read with PIL; everything else goes to PyAV
TASKS = ("extend", "interpolate", "animate", "restyle", "inpaint")
CHUNK_SEED_STEP = 0x9E3779B97F4A7C15  # chunk k of a long video draws its noise from seed + k × this (mod 2^64)
GUIDE_LEVEL = 0.5  # a long video's windows are held at this noise level of its guide: layout and colour kept
# Defaults of the tasks, shared with `check_task` so that a server checks what the task will do.
DURATION_S = 2.0  # new seconds of extend, length of an interpolation or an animation
CONTEXT_S = 1.0  # seconds of what exists that each chunk of a long video or an extension sees
INTERPOLATE_CONTEXT_S = 0.5  # seconds of each end an interpolation keeps
RESTYLE_STRENGTH = 0.6
Media = str | Path | np.ndarray


# ----------------------------------------------------------------------------- reading and fitting inputs


def read_media(path: str | Path, fps: float | None = None) -> tuple[np.ndarray, float | None]:
    """A video or an image -> (uint8 frames (T, H, W, 3), fps); an image is one frame with fps None.

    fps: pick the frames nearest to every 1/fps s while decoding (the returned fps is then `fps`).
    A missing, empty, unreadable, frameless or too large file raises InputError saying what to do.
    """
    p = _existing(path)
    image = _read_image(p)
    if image is not None:
        return image[None], None
    return _read_video(p, fps)


def _existing(path: str | Path) -> Path:
    """The path of a non-empty file, or InputError saying what is wrong with it."""
    text = str(path)
    try:
        ok = "\x00" not in text and Path(text).is_file()
    except OSError:
        ok = False
    if not ok:
        raise InputError(f"input {text[:200]!r} does not exist or is not a file; check the path")
    p = Path(text)
    if p.stat().st_size == 0:
        raise InputError(f"{p} is empty (0 bytes); give a video (MP4, WebM, ...) or an image (PNG, JPEG, WebP)")
    return p


def _read_image(p: Path) -> np.ndarray | None:
    """(H, W, 3) uint8 when `p` is a PNG/JPEG/WebP/BMP image, None when it is not an image PIL knows."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        img = Image.open(p)
    except (UnidentifiedImageError, OSError):
        return None
    with img:
        if img.format not in IMAGE_FORMATS:
            return None
        _check_side(p, *img.size)
        try:
            return _rgb8(ImageOps.exif_transpose(img))
        except (OSError, ValueError) as e:
            raise InputError(f"{p} is a damaged {img.format} image ({e}); give a complete image file") from e


def _rgb8(img) -> np.ndarray:
    """(H, W, 3) uint8 of a PIL image in any mode. 16- and 32-bit grey (PNG "I;16", "I") is scaled from its
    range (PIL's own conversion clips it to white); everything else is converted by PIL."""
    if img.mode.startswith("I"):
        grey = np.asarray(img).astype(np.float64)  # (H, W)
        top = 65535.0 if img.mode.startswith("I;16") or grey.max() > 255 else 255.0
        grey = np.clip(grey / top * 255.0, 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _check_side(p: Path, w: int, h: int) -> None:
    if not (0 < w <= MAX_INPUT_SIDE_PX and 0 < h <= MAX_INPUT_SIDE_PX):
        raise InputError(f"{p} is {w}x{h} px; at most {MAX_INPUT_SIDE_PX} px a side is read: scale it down first")


def probe_media(path: str | Path, fps: float) -> tuple[int, int, int]:
    """(frames at `fps`, height_px, width_px) of what `read_media(path, fps)` would return, without keeping
    the pixels; it refuses exactly what `read_media` refuses (InputError)."""
    p = _existing(path)
    image = _read_image(p)
    if image is not None:
        return (1, *image.shape[:2])
    shapes, _ = _read_video(p, fps, convert=False)
    return (len(shapes), *shapes[0])


def _read_video(p: Path, fps: float | None, convert: bool = True) -> tuple[np.ndarray | list, float]:
    """(frames (T, H, W, 3), fps); `convert` False: a list of each picked frame's (height, width) instead."""
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise InputError(f"{p} has no video stream; give a video (MP4, WebM, ...) or an image (PNG, JPEG)")
            stream = container.streams.video[0]
            _check_side(p, stream.codec_context.width, stream.codec_context.height)
            src_fps = float(stream.average_rate or stream.guessed_rate or 0) or float(fps or 8)
            duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
            if duration > MAX_INPUT_S:
                raise InputError(f"{p} lasts {duration:.0f} s; at most {MAX_INPUT_S:.0f} s is read: trim it first")
            frames = _pick_frames(p, container.decode(stream), src_fps, fps or src_fps, convert)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        detail = " ".join(str(e).split())[:200]
        raise InputError(f"{p} is not a readable video or image ({detail}); give an MP4, WebM, PNG or JPEG") from e
    if not frames:
        raise InputError(f"{p} has no decodable frames; give a complete, playable video")
    return (np.stack(frames) if convert else frames), float(fps or src_fps)


def _pick_frames(p: Path, decoded, src_fps: float, fps: float, convert: bool = True) -> list:
    """The decoded frame nearest in time to every k/fps s (k = 0, 1, ... while a frame is within half a frame),
    upright as players show it, within the size and duration limits (`convert` False: only each picked
    frame's (height, width) upright).

    Times are the frames' own timestamps, from the first frame's: phones record at a variable frame
    rate, so a frame's index says little about its time. Frames without a timestamp count as i / src_fps.
    """
    kept, k, frame_bytes = [], 0, 0
    first, prev = None, None  # the first frame's time; [time, frame, its picked form or None] of the last one

    def pick(last: list) -> None:
        nonlocal frame_bytes
        if last[2] is None:
            frame, turns = last[1], display_turns(last[1])  # a phone's portrait video is stored turned
            size = (frame.width, frame.height) if turns % 2 else (frame.height, frame.width)
            last[2] = upright(frame.to_ndarray(format="rgb24"), turns) if convert else size
        kept.append(last[2])
        frame_bytes += last[1].height * last[1].width * 3  # as rgb24
        if frame_bytes > MAX_INPUT_BYTES:
            raise InputError(f"{p} is too large to edit at once (over 2 GiB of frames); trim or scale it down first")

    for i, frame in enumerate(decoded):
        _check_side(p, frame.width, frame.height)
        t = float(frame.time) if frame.time is not None else i / src_fps
        first = t if first is None else first
        t -= first
        if t > MAX_INPUT_S or i > 4 * MAX_INPUT_S * src_fps:
            raise InputError(f"{p} lasts more than {MAX_INPUT_S:.0f} s; trim it first")
        while prev is not None and k / fps < (prev[0] + t) / 2:  # the previous frame is the nearest to k / fps
            pick(prev)
            k += 1
        prev = [t, frame, None]
    while prev is not None and k / fps < prev[0] + 0.5 / src_fps:  # the last frame holds for half a frame
        pick(prev)
        k += 1
    return kept


def fit_to(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, height, width, 3): resized to cover the output (aspect kept), centre-cropped."""
    t, h, w, _ = frames.shape
    scale = max(width / w, height / h)
    nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
    x0, y0 = (nw - width) // 2, (nh - height) // 2
    out = np.empty((t, height, width, 3), dtype=np.uint8)
    for i in range(0, t, 32):  # a few frames at a time: bounded memory for long inputs
        x = rearrange(torch.from_numpy(np.ascontiguousarray(frames[i : i + 32])).float(), "t h w c -> t c h w")
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        x = x[:, :, y0 : y0 + height, x0 : x0 + width]  # (t, 3, height, width)
        out[i : i + 32] = rearrange(x.round().clamp(0, 255).byte(), "t c h w -> t h w c").numpy()
    return out


def snap_shape(width_px: int, height_px: int) -> tuple[int, int]:
    """The trained (width, height) whose aspect ratio is nearest to the input's."""
    aspect = math.log(width_px / height_px)
    return min(TRAINED_SHAPES_PX, key=lambda s: abs(math.log(s[0] / s[1]) - aspect))


def output_size(
    pipe: TesseraPipeline, width_px: int, height_px: int, width: int | None = None, height: int | None = None
) -> tuple[int, int]:
    """(width, height) of the output made from a width_px × height_px input: as given, else the input's
    aspect snapped to a trained shape; InputError for a size the model cannot make."""
    snapped = snap_shape(width_px, height_px)
    width, height = width or snapped[0], height or snapped[1]
    pipe.geometry.check_size(width, height)
    return width, height


def box_to_output(box, width_px: int, height_px: int, width: int, height: int) -> tuple[int, int, int, int]:
    """A box (x0, y0, x1, y1) in pixels of a width_px × height_px input -> the same region in pixels of the
    width × height output `fit_to` makes of it (resized to cover, centre-cropped), clipped to the output.

    InputError when the box is not inside the input, or lies wholly in the part that is cropped away.
    """
    x0, y0, x1, y1 = _check_box(box, width_px, height_px, "input")
    scale = max(width / width_px, height / height_px)
    nw, nh = max(width, round(width_px * scale)), max(height, round(height_px * scale))
    cx, cy = (nw - width) // 2, (nh - height) // 2  # what fit_to crops off the left and the top
    sx, sy = nw / width_px, nh / height_px
    out = (
        min(max(math.floor(x0 * sx) - cx, 0), width), min(max(math.floor(y0 * sy) - cy, 0), height),
        min(max(math.ceil(x1 * sx) - cx, 0), width), min(max(math.ceil(y1 * sy) - cy, 0), height),
    )  # fmt: skip
    if not (out[0] < out[2] and out[1] < out[3]):
        raise InputError(
            f"box {x0},{y0},{x1},{y1} lies in the part of the {width_px}x{height_px} input that is cropped away to "
            f"make the {width}x{height} output; draw it nearer the centre"
        )
    return out


def load(pipe: TesseraPipeline, media: Media, width: int | None = None, height: int | None = None) -> np.ndarray:
    """A path or uint8 frames (taken as at the model's fps) -> frames at the output size and the model's fps.

    width/height None: the input's aspect snapped to a trained shape. Logs one line: from what to what.
    """
    fps = pipe.config.fps
    if isinstance(media, np.ndarray):
        frames, name = media, "input frames"
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
            raise InputError(f"input frames must be uint8 (T, H, W, 3) with T >= 1; got {frames.dtype} {frames.shape}")
    else:
        frames, _ = read_media(media, fps=fps)
        name = str(media)
    h0, w0 = frames.shape[1:3]
    width, height = output_size(pipe, w0, h0, width, height)
    fitted = fit_to(frames, width, height)
    what = "an image" if len(frames) == 1 else f"{len(frames)} frames at {fps} fps"
    log.info("%s: %dx%d -> %dx%d (resized to cover, centre-cropped), %s", name, w0, h0, width, height, what)
    return fitted


# ----------------------------------------------------------------------------- the tasks


def extend(
    pipe: TesseraPipeline, video: Media, prompt: str, duration_s: float = DURATION_S, context_s: float = CONTEXT_S,
    backwards: bool = False, *, width: int | None = None, height: int | None = None, **settings,
) -> VideoOutput:  # fmt: skip
    """The input followed (backwards: preceded) by `duration_s` of new frames, as one video.

    The new frames are made in chunks conditioned on the input's last (first) `context_s`.
    settings: as for `pipe(...)` (seed, num_inference_steps, output_type="mp4", output_path, ...).
    """
    frames = load(pipe, video, width, height)
    h, w = frames.shape[1:3]
    cont = Continuation(frames, backwards=backwards, context_s=context_s)
    return pipe(prompt, duration_s=duration_s, width=w, height=h, continues=cont, **settings)


def interpolate(
    pipe: TesseraPipeline, a: Media, b: Media, prompt: str, duration_s: float = DURATION_S,
    context_s: float = INTERPOLATE_CONTEXT_S,
    *, width: int | None = None, height: int | None = None, **settings,
) -> VideoOutput:  # fmt: skip
    """A clip of `duration_s` that starts with the end of `a` and ends with the start of `b` (images or videos)."""
    first = load(pipe, a, width, height)
    h, w = first.shape[1:3]
    last = load(pipe, b, w, h)
    n, m = _interpolation(pipe, len(first), len(last), duration_s, context_s)
    start = _tail_item(first, m, pipe.geometry.frame_step)
    end = _head_item(last, n, m, pipe.geometry.frame_step)
    return pipe(prompt, duration_s=duration_s, width=w, height=h, conditioning=[start, end], **settings)


def animate(
    pipe: TesseraPipeline, image: Media, prompt: str, duration_s: float = DURATION_S,
    *, width: int | None = None, height: int | None = None, **settings,
) -> VideoOutput:  # fmt: skip
    """A video of `duration_s` whose first frame is `image` (a video: its first frame)."""
    frames = load(pipe, image, width, height)[:1]
    h, w = frames.shape[1:3]
    return pipe(prompt, duration_s=duration_s, width=w, height=h, conditioning=[ConditioningItem(frames)], **settings)


def restyle(
    pipe: TesseraPipeline, video: Media, prompt: str, strength: float = RESTYLE_STRENGTH,
    *, width: int | None = None, height: int | None = None, **settings,
) -> VideoOutput:  # fmt: skip
    """The input re-rendered under `prompt`; strength: how much to change, in (0, 1)."""
    _check_strength(strength)
    frames = load(pipe, video, width, height)
    frames = frames[: _trimmed(pipe, len(frames), "restyle")]
    h, w = frames.shape[1:3]
    item = ConditioningItem(frames, strength=1.0 - strength)
    return pipe(prompt, duration_s=_seconds(pipe, len(frames)), width=w, height=h, conditioning=[item], **settings)


def inpaint(
    pipe: TesseraPipeline, video: Media, prompt: str, box: tuple[int, int, int, int], from_s: float,
    to_s: float | None, *, width: int | None = None, height: int | None = None, **settings,
) -> VideoOutput:  # fmt: skip
    """The input with the box (x0, y0, x1, y1, pixels of the output) regenerated from `from_s` to `to_s`
    (None: the end of the clip)."""
    frames = load(pipe, video, width, height)
    frames = frames[: _trimmed(pipe, len(frames), "inpaint")]
    t, h, w = frames.shape[:3]
    x0, y0, x1, y1 = _check_box(box, w, h)
    from_s, to_s = _check_range(pipe, from_s, to_s, t)
    fps = pipe.config.fps
    keep = np.ones((t, h, w), dtype=bool)
    keep[math.floor(from_s * fps) : math.ceil(to_s * fps), y0:y1, x0:x1] = False
    item = ConditioningItem(frames, keep=keep)
    return pipe(prompt, duration_s=_seconds(pipe, t), width=w, height=h, conditioning=[item], **settings)


def check_task(
    pipe: TesseraPipeline, task: str, inputs: list[tuple[int, int, int]], *, duration_s: float = DURATION_S,
    context_s: float | None = None, backwards: bool = False, strength: float = RESTYLE_STRENGTH, box=None,
    from_s: float | None = None, to_s: float | None = None, width: int | None = None, height: int | None = None,
) -> tuple[int, int, float]:  # fmt: skip
    """What the task function `task` would refuse about these inputs, found without reading a pixel (InputError).

    inputs: (frames at the model's fps, height_px, width_px) of each input (`probe_media`; two for
    interpolate). Arguments as the task function takes them (box in output pixels; context_s None: its
    default). Returns the output's (width, height, duration_s): what `pipe.check_request` checks next.
    """
    if task not in TASKS:
        raise InputError(f"unknown edit task {task!r}; choose one of {', '.join(TASKS)}")
    if len(inputs) != (2 if task == "interpolate" else 1):
        raise InputError(f"{task} takes {2 if task == 'interpolate' else 1} input(s); {len(inputs)} were given")
    frames, h0, w0 = inputs[0]
    w, h = output_size(pipe, w0, h0, width, height)
    if task == "extend":
        _context_latents(pipe, CONTEXT_S if context_s is None else context_s, pipe.window_frames(pipe.config.fps))
    if task == "interpolate":
        _interpolation(
            pipe, frames, inputs[1][0], duration_s, INTERPOLATE_CONTEXT_S if context_s is None else context_s
        )
    if task in ("extend", "interpolate", "animate"):
        return w, h, duration_s
    n = _trimmed(pipe, frames, task)
    if task == "restyle":
        _check_strength(strength)
    else:
        _check_box(box, w, h)
        _check_range(pipe, from_s, to_s, n)
    return w, h, _seconds(pipe, n)


def _check_strength(strength) -> None:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength < 1:
        raise InputError(f"strength {strength!r} is how much to change and must lie strictly between 0 and 1, e.g. 0.6")


def _check_box(box, w: int, h: int, frame: str = "output") -> tuple[int, int, int, int]:
    try:
        x0, y0, x1, y1 = (int(v) for v in (box.split(",") if isinstance(box, str) else box))
    except (TypeError, ValueError):
        raise InputError(f"box {box!r} must be four whole numbers x0,y0,x1,y1 in {frame} pixels") from None
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise InputError(
            f"box {x0},{y0},{x1},{y1} must lie inside the {w}x{h} {frame} with x0 < x1 and y0 < y1 "
            f"(0 <= x <= {w}, 0 <= y <= {h})"
        )
    return x0, y0, x1, y1


def _check_range(pipe: TesseraPipeline, from_s, to_s, frames: int) -> tuple[float, float]:
    """The time range of an inpaint inside a clip of `frames` frames at the model's fps (to_s None: its end)."""
    t = frames / pipe.config.fps
    to_s = t if to_s is None else to_s
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (from_s, to_s))
    if not (ok and math.isfinite(from_s) and math.isfinite(to_s) and 0 <= from_s < to_s <= t):
        raise InputError(f"the time range {from_s}–{to_s} s must satisfy 0 <= from < to <= {t:g} s (the clip's length)")
    return from_s, to_s


def _seconds(pipe: TesseraPipeline, frames: int) -> float:
    """The duration_s the pipeline turns into exactly `frames` (a valid count) frames."""
    return (frames - 1) / pipe.config.fps


def _window_frames(pipe: TesseraPipeline, duration_s: float, task: str) -> int:
    longest = pipe.config.max_duration_s
    if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float)) or not 0 < duration_s <= longest:
        raise InputError(
            f"{task} makes one clip of up to {longest:g} s; duration {duration_s!r} s is outside (0, {longest:g}]"
        )
    return pipe.geometry.frames_for(duration_s, pipe.config.fps)


def _interpolation(pipe: TesseraPipeline, frames_a: int, frames_b: int, duration_s, context_s) -> tuple[int, int]:
    """(frames of the clip, latent frames of context) of an interpolation; InputError when nothing is left between."""
    step = pipe.geometry.frame_step
    n = _window_frames(pipe, duration_s, "interpolate")
    m = _context_latents(pipe, context_s, pipe.window_frames(pipe.config.fps))
    c_a, c_b = _tail_count(frames_a, m, step), _head_count(frames_b, m, step)
    if c_a + c_b + step > n:
        raise InputError(
            f"{duration_s} s leaves no frames between A and B ({c_a} + {c_b} of {n} frames are kept); "
            "give a longer --duration-s or a shorter context"
        )
    return n, m


def _trimmed(pipe: TesseraPipeline, frames: int, task: str) -> int:
    """The longest valid frame count (1 + k × frame step) of `frames` input frames; InputError above the window."""
    step, fps = pipe.geometry.frame_step, pipe.config.fps
    n = 1 + step * ((frames - 1) // step)
    if n < 1 + step:
        raise InputError(
            f"{task} needs a video of at least {1 + step} frames ({step / fps:g} s at {fps} fps); the input has "
            f"{frames}; to bring an image to life use `tessera edit animate`"
        )
    window = pipe.window_frames(fps)
    if n > window:
        raise InputError(
            f"{task} edits up to {pipe.config.max_duration_s:g} s ({window} frames at {fps} fps); the input is "
            f"{frames / fps:.1f} s: trim it"
        )
    return n


# ----------------------------------------------------------------------------- chunks: long videos and extend


@dataclass
class Continuation:
    """Frames a generated video continues: the new frames follow them, or precede them when `backwards`.

    frames: (T, H, W, 3) uint8 at the output's size and fps; context_s: how much of their end
    (start) each chunk is conditioned on.
    """

    frames: np.ndarray
    backwards: bool = False
    context_s: float = CONTEXT_S


def _context_latents(pipe: TesseraPipeline, context_s: float, window: int) -> int:
    """Latent frames of context (~context_s): at least 1, leaving a latent frame of new content in a window."""
    step, fps = pipe.geometry.frame_step, pipe.config.fps
    most = (window - 1) // step - 1
    if isinstance(context_s, bool) or not isinstance(context_s, (int, float)) or not 0 < context_s <= most * step / fps:
        raise InputError(
            f"context {context_s!r} s is outside (0, {most * step / fps:g}] s (what a clip holds besides new frames)"
        )
    return min(most, max(1, round(context_s * fps / step)))


def _tail_count(frames: int, m: int, step: int) -> int:
    """How many of a video's last frames begin a chunk: 1 + step × m (fewer for a short video)."""
    return 1 + step * min(m, (frames - 1) // step)


def _head_count(frames: int, m: int, step: int) -> int:
    """How many of a chunk's last frames a video's first frames fill: step × m (an image: held over `step`)."""
    return step * min(m, frames // step) or step


def _tail_item(video: np.ndarray, m: int, step: int) -> ConditioningItem:
    """The last 1 + step × m frames (fewer for a short video) at frame 0 of a chunk."""
    return ConditioningItem(video[len(video) - _tail_count(len(video), m, step) :])


def _head_item(video: np.ndarray, n: int, m: int, step: int) -> ConditioningItem:
    """The first step × m frames at the end of an n-frame chunk (an image: held over the last step frames)."""
    if len(video) < step:
        return ConditioningItem(video[:1], start=n - 1)
    c = _head_count(len(video), m, step)
    return ConditioningItem(video[:c], start=n - c)


def _plan(length: int, want: int, m: int, step: int, window: int, backwards: bool) -> list[tuple[int, int, int]]:
    """(new frames kept, frames generated, context frames) per chunk continuing `length` frames by `want`."""
    plan = []
    while want > 0:
        c = _head_count(length, m, step) if backwards else _tail_count(length, m, step)
        new = min(want, window - c)
        made = 1 + step * math.ceil((new - 1) / step) if backwards else step * math.ceil(new / step)
        plan.append((new, made, c))
        length, want = length + new, want - new
    return plan


def chunk_joins(pipe: TesseraPipeline, frames: int, context_s: float = CONTEXT_S) -> list[int]:
    """The first new frame of every chunk after the first window of a `frames`-frame text-to-video."""
    window = pipe.window_frames(pipe.config.fps)
    m = _context_latents(pipe, context_s, window)
    plan = _plan(window, frames - window, m, pipe.geometry.frame_step, window, False)
    return np.cumsum([window] + [new for new, _, _ in plan[:-1]]).tolist()


def generate_in_chunks(
    pipe: TesseraPipeline, req: Request, solver, callback, conditioning, continues: Continuation | None, latents
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """(the last chunk's latents (B, C, T', H', W'), unmarked frames per prompt) of a long or continued video.

    Text-to-video: a guide first (the whole prompt as one clip a quarter as long, stretched in time
    to the full length: `guide_frames`), then the video window by window, each held near the guide at noise
    level GUIDE_LEVEL and the later ones conditioned on the last ~1 s before them, blended over
    that second. So a 12 s video keeps one trajectory, colour and shape from end to end. A
    continuation: chunks from its frames, `req.frames - 1` new frames in all, its frames kept.
    Chunk k of a prompt with seed s draws its noise from seed s + k × CHUNK_SEED_STEP (k = 0:
    the guide, the same noise as a one-window video of that seed), so a seed gives the same video.
    """
    _check_chunked(pipe, req, conditioning, continues, latents)
    window = pipe.window_frames(req.fps)
    cont = continues or Continuation(np.zeros((window, 1, 1, 3), dtype=np.uint8))
    m = _context_latents(pipe, cont.context_s, window)
    want = req.frames - (window if continues is None else 1)
    plan = _plan(len(cont.frames), want, m, pipe.geometry.frame_step, window, cont.backwards)
    chunks = len(plan) + (2 if continues is None else 0)
    zs, videos = [], []
    for i in range(len(req.prompts)):
        one = dataclasses.replace(
            req, prompts=req.prompts[i : i + 1], seeds=req.seeds[i : i + 1], enhanced=req.enhanced[i : i + 1],
            output_paths=[None], single=True,
        )  # fmt: skip

        def progress(k: int, done: int = i * chunks):  # chunk k of prompt i, over all chunks of all prompts
            if callback is None:
                return None
            return lambda step, total: callback((done + k) * total + step, total * chunks * len(req.prompts))

        k0, video, guide = 0, cont.frames, None
        if continues is None:  # a long text-to-video: the guide, then its first window
            guide = guide_frames(pipe, one, solver, progress(0), conditioning, window)
            items = [ConditioningItem(guide[:window], strength=1 - GUIDE_LEVEL)] + list(conditioning or [])
            z = pipe._render(_reseeded(one, window, 1), solver, progress(1), items)
            k0, video = 2, pipe._decode(z)[0]
        for k, (new, made, c) in enumerate(plan, start=k0):
            z, video = _chunk(pipe, one, solver, progress(k), video, (new, made, c), cont.backwards, k, guide)
        zs.append(z[0])
        videos.append(video)
    return torch.stack(zs), videos


def _check_chunked(pipe: TesseraPipeline, req: Request, conditioning, continues: Continuation | None, latents) -> None:
    if latents is not None or req.output_type == "latent":
        raise InputError(
            f"a video longer than {pipe.config.max_duration_s:g} s or an extension is made and decoded chunk by chunk; "
            "latents= and output_type='latent' work on one clip only"
        )
    if continues is not None and conditioning:
        raise InputError("conditioning items and a continuation cannot be combined in one call; use one of them")
    window = pipe.window_frames(req.fps)
    for item in conditioning or []:
        if item.start + len(item.frames) > window:
            raise InputError(
                f"in a video longer than {pipe.config.max_duration_s:g} s the conditioning frames must lie in the "
                f"first {window} frames; an item ends at frame {item.start + len(item.frames) - 1}"
            )
    if continues is not None and continues.frames.shape[1:3] != (req.height_px, req.width_px):
        raise InputError(
            f"the frames to continue are {continues.frames.shape[2]}x{continues.frames.shape[1]} px but the video "
            f"is {req.width_px}x{req.height_px}; fit them first (tessera.edit.fit_to)"
        )


def _reseeded(one: Request, frames: int, k: int) -> Request:
    """The one-prompt request for chunk k: `frames` frames, noise from seed + k × CHUNK_SEED_STEP."""
    return dataclasses.replace(one, frames=frames, seeds=[(one.seeds[0] + k * CHUNK_SEED_STEP) % (1 << 64)])


def stretch(video: np.ndarray, n: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (n, H, W, 3): the same motion over n frames, each a blend of its two nearest."""
    pos = np.linspace(0, len(video) - 1, n)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, len(video) - 1)
    a = (pos - i0)[:, None, None, None]
    return ((1 - a) * video[i0] + a * video[i1]).round().astype(np.uint8)


def guide_frames(pipe: TesseraPipeline, one: Request, solver, progress, conditioning, window: int) -> np.ndarray:
    """The whole prompt in one clip, stretched to `one.frames` frames and padded by a latent group:
    (one.frames + frame step, H, W, 3) uint8.

    The clip is a quarter of the video (up to the window), so each of its frames lands on a latent
    group boundary of the video (frame step 4); it uses the video's seed. Items at frame 0 give it
    their first frame (the same instant in both); later items only act on the video's first window.
    """
    first = [
        dataclasses.replace(it, frames=it.frames[:1], keep=None if it.keep is None else np.asarray(it.keep)[:1])
        for it in conditioning or []
        if it.start == 0
    ]
    step = pipe.geometry.frame_step
    frames = min(window, 1 + step * max(1, (one.frames - 1) // step**2))
    z = pipe._render(_reseeded(one, frames, 0), solver, progress, first)
    guide = stretch(pipe._decode(z)[0], one.frames)
    return np.concatenate([guide, np.repeat(guide[-1:], step, axis=0)])


def _chunk(pipe, one, solver, progress, video, sizes, backwards, k, guide):
    """One extend step: generate `made` frames beside `c` context frames of `video`, join `new` of them.

    With a guide (a long text-to-video, forward), the new frames are also held near the guide, and
    the context second is blended from the frames before into this chunk's own version of them.
    """
    new, made, c = sizes
    n = made + c
    if backwards:
        items = [_head_item(video, n, c // pipe.geometry.frame_step, pipe.geometry.frame_step)]
    else:
        items = [ConditioningItem(video[len(video) - c :])]
    if guide is not None:
        items.append(ConditioningItem(guide[len(video) : len(video) + made], start=c, strength=1 - GUIDE_LEVEL))
    z = pipe._render(_reseeded(one, n, k), solver, progress, items)
    frames = pipe._decode(z)[0]
    if backwards:
        return z, np.concatenate([frames[made - new : made], video])
    if guide is not None:
        w = (np.arange(1, c + 1, dtype=np.float32) / (c + 1))[:, None, None, None]
        blended = ((1 - w) * video[-c:] + w * frames[:c]).round().astype(np.uint8)
        return z, np.concatenate([video[:-c], blended, frames[c : c + new]])
    return z, np.concatenate([video, frames[c : c + new]])
