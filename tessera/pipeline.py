"""Text -> video from swappable components: text encoder, DiT, scheduler, VAE, watermarker, ledger.

    pipe = TesseraPipeline.from_single_file()      # the bundled model (or from_pretrained(folder))
    out = pipe("a red circle moving left on a black background", seed=0)
    out.frames          # (T, H, W, 3) uint8, carrying the invisible watermark
    out.generation_id   # what the mark and the ledger record name
    pipe("...", output_type="mp4", output_path="out.mp4")   # written atomically, then recorded

Every video that leaves the pipeline is marked and recorded: the CLI, the Python API and
the server share this one path. The steps of `__call__` are numbered below; each
component can be swapped without touching the others (`scheduler=...` per call too).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from einops import rearrange

from tessera import checkpoint
from tessera.conditioning import Condition, ConditioningItem, encode_items
from tessera.config import (
    MAX_FPS,
    MAX_GUIDANCE,
    MAX_SEED,
    MAX_STEPS,
    MAX_VIDEO_S,
    ModelConfig,
    build_config,
    model_config_from_dict,
)
from tessera.diffusion.flow import shift_for
from tessera.enhance import Enhanced, PromptEnhancer, RuleEnhancer
from tessera.errors import InputError
from tessera.geometry import Geometry
from tessera.models import without_init
from tessera.models.autoencoder import video_vae_from_checkpoint
from tessera.models.dit import DiT
from tessera.models.quant import quantize_int8
from tessera.models.text import PromptEncoder, TextEmbedding, TextEncoder
from tessera.models.tiling import TilingConfig, tiled_decode
from tessera.models.vae import VideoVAE
from tessera.pretrained import read_json, write_json
from tessera.safety.watermarker import Ledger, Watermarker
from tessera.schedulers import FlowScheduler, get_scheduler

if TYPE_CHECKING:
    from tessera.edit import Continuation

TILED_DECODE_ABOVE_PX = 512 * 512 * 33  # output pixels × frames per video; above this, decode in tiles and chunks
OUTPUT_TYPES = ("np", "pt", "mp4", "latent")
MAX_PROMPT_CHARS = 4000
DEFAULT_SAMPLING = {"steps": 25, "guidance": 4.0}  # the teacher's: 25 Euler steps, guidance 4


def bundled_checkpoint() -> Path:
    """Path of the small model that ships inside the package."""
    return checkpoint.bundled_path()


def bundled_student() -> Path:
    """Where a few-step student of the bundled model ships, when it does (`tessera generate --fast`)."""
    return checkpoint.bundled_path().with_name("tessera-small-student.safetensors")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Request:
    """One call's inputs, checked and resolved (sizes in pixels, defaults filled)."""

    prompts: list[str]
    negative_prompt: str
    seeds: list[int]
    steps: int
    guidance: float
    frames: int
    height_px: int
    width_px: int
    fps: int
    output_type: str
    output_paths: list[Path | None]
    single: bool  # one prompt given as a string: return one output, not a list
    enhanced: list[Enhanced | None]  # the prompt enhancer's rewrite of each prompt (None: enhance=False)

    @property
    def encoded_prompts(self) -> list[str]:
        """What the text encoder reads: each rewritten prompt, or the prompt as given."""
        return [e.text if e is not None else p for p, e in zip(self.prompts, self.enhanced)]


@dataclass
class VideoOutput:
    """What one prompt produced.

    frames: (T, H, W, 3) uint8 for output_type "np" and "mp4", (T, 3, H, W) float in [0, 1] for "pt",
    None for "latent". latents: the final latent (C, T', H', W'), always set (a video made in chunks: the last chunk's).
    """

    frames: np.ndarray | torch.Tensor | None
    latents: torch.Tensor
    generation_id: str | None
    record: dict | None
    path: Path | None
    prompt: str
    seed: int
    fps: int
    enhanced_prompt: str | None = None  # what the text encoder read, when the prompt enhancer ran


class TesseraPipeline:
    """Text -> video. DiT and VAE run on `device` (default: a GPU if there is one) under bf16 autocast;
    the text encoder stays where it was built; noise is drawn on the CPU, so a seed gives the same
    starting point on every device."""

    def __init__(
        self,
        transformer: DiT,
        vae: VideoVAE,
        text_encoder: PromptEncoder,
        scheduler: FlowScheduler | None = None,
        watermarker: Watermarker | None = None,
        ledger: Ledger | None = None,
        prompt_filter=None,
        enhancer: PromptEnhancer | None = None,
        config: ModelConfig | None = None,
        name: str = "tessera",
        device: str | torch.device | None = None,
    ):
        if text_encoder.dim != transformer.cfg.text_dim:
            raise InputError(
                f"the text encoder's width is {text_encoder.dim} but the DiT expects text_dim "
                f"{transformer.cfg.text_dim}; build the DiT with DiTConfig(text_dim={text_encoder.dim})"
            )
        if vae.latent_channels != transformer.cfg.in_channels:
            raise InputError(
                f"the VAE makes {vae.latent_channels} latent channels but the DiT takes {transformer.cfg.in_channels}"
            )
        self.device = torch.device(device) if device else default_device()
        self.transformer, self.vae = transformer.eval().to(self.device), vae.eval().to(self.device)
        self.text_encoder = text_encoder
        self.scheduler = scheduler or get_scheduler("euler")
        self.watermarker = watermarker or Watermarker()
        self.ledger = ledger or Ledger()
        self.prompt_filter = prompt_filter or _default_prompt_filter(text_encoder)
        self.enhancer = enhancer if enhancer is not None else RuleEnhancer()
        self.config = copy.deepcopy(config) if config else ModelConfig()
        self.config.dit = transformer.cfg
        self.config.vae = getattr(vae, "cfg", self.config.vae)
        self.config.text = getattr(text_encoder, "cfg", self.config.text)
        self.name = name
        self.geometry = Geometry.of(vae, transformer.cfg)
        self.reuse_text = True  # cross-attention text keys/values computed once per generation
        self.sampling = dict(DEFAULT_SAMPLING)  # steps and guidance when a call does not say

    @functools.cached_property
    def model_hash(self) -> str:
        """SHA-256 over the DiT's and the VAE's weights (names, shapes, bytes): the model the ledger and manifest name."""
        digest = hashlib.sha256()
        for prefix, module in (("dit", self.transformer), ("vae", self.vae)):
            for k, v in module.state_dict().items():
                digest.update(f"{prefix}.{k}{tuple(v.shape)}".encode())
                digest.update(v.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_single_file(
        cls,
        path: str | Path | None = None,
        text_encoder: PromptEncoder | None = None,
        device: str | torch.device | None = None,
        **components,
    ) -> TesseraPipeline:
        """Load a one-file generation checkpoint (VAE + DiT + config); default: the bundled model."""
        path = Path(path) if path else bundled_checkpoint()
        tensors, config, meta = checkpoint.load(path)
        if meta.get("kind") != "generator":
            raise checkpoint.CheckpointError(
                f"{path} is a {meta.get('kind', 'unknown')!r} checkpoint, not a generation model (VAE + DiT)"
            )
        try:
            cfg = model_config_from_dict(config)
        except InputError as e:
            raise checkpoint.CheckpointError(f"{path}: its config is not valid ({e})") from e
        with without_init():  # every weight is loaded next
            vae, dit = video_vae_from_checkpoint(path, tensors, config, meta), DiT(cfg.dit)
        try:
            dit.load_state_dict({k: v.float() for k, v in checkpoint.split_prefix(tensors, "dit").items()})
        except RuntimeError as e:
            raise checkpoint.CheckpointError(
                f"{path}: DiT weights do not match its config: {str(e).splitlines()[0]}"
            ) from e
        if text_encoder is None and cfg.text.kind != "minilm":
            raise InputError(
                f"{path} was trained with a {cfg.text.kind!r} text encoder; pass text_encoder=TextEncoder(...)"
            )
        text_encoder = text_encoder or TextEncoder(cfg.text)
        name = meta.get("name", path.stem)
        pipe = cls(dit, vae, text_encoder, config=cfg, name=name, device=device, **components)
        if "sampling" in meta and "scheduler" not in components:  # e.g. a few-step student: Euler, 4 steps, no guidance
            sampling = json.loads(meta["sampling"])
            pipe.use_sampling(sampling["scheduler"], sampling["steps"], sampling["guidance"])
        return pipe

    from_checkpoint = from_single_file  # the name earlier releases used

    def save_pretrained(self, folder: str | Path) -> Path:
        """A folder with `model_index.json` and one sub-folder per component (see tessera.pretrained)."""
        folder = Path(folder)
        self.transformer.save_pretrained(folder / "transformer")
        self.vae.save_pretrained(folder / "vae")
        self.text_encoder.save_pretrained(folder / "text_encoder")
        write_json(folder / "scheduler" / "scheduler_config.json", self.scheduler.to_dict())
        defaults = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in ("vae", "dit", "text")}
        index = {
            "_class_name": type(self).__name__,
            "name": self.name,
            "transformer": ["tessera", type(self.transformer).__name__],
            "vae": ["tessera", type(self.vae).__name__],
            "text_encoder": ["tessera", type(self.text_encoder).__name__],
            "scheduler": ["tessera", type(self.scheduler).__name__],
            "config": defaults,
        }
        write_json(folder / "model_index.json", index)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device | None = None, **components):
        """Load what `save_pretrained` wrote; keyword arguments replace components (e.g. `scheduler=`)."""
        folder = Path(folder)
        index = read_json(folder / "model_index.json")
        if "text_encoder" not in components:
            components["text_encoder"] = TextEncoder.from_pretrained(folder / "text_encoder")
        if "scheduler" not in components:
            components["scheduler"] = get_scheduler(read_json(folder / "scheduler" / "scheduler_config.json")["kind"])
        transformer = components.pop("transformer", None) or DiT.from_pretrained(folder / "transformer")
        vae = components.pop("vae", None) or VideoVAE.from_pretrained(folder / "vae")
        config = build_config(ModelConfig, index.get("config", {}))
        name = str(index.get("name", folder.name))
        return cls(transformer, vae, config=config, name=name, device=device, **components)

    def to(self, device: str | torch.device) -> TesseraPipeline:
        self.device = torch.device(device)
        self.transformer.to(self.device)
        self.vae.to(self.device)
        return self

    # ------------------------------------------------------------------ runtime switches (not saved)
    def enable_text_kv_reuse(self, enabled: bool = True) -> TesseraPipeline:
        """Compute the text keys and values of every cross-attention once per generation (default) or at every step."""
        self.reuse_text = enabled
        return self

    def quantize_int8(self) -> TesseraPipeline:
        """Int8 weights (one scale per output channel) for the DiT's linear layers, from the loaded weights."""
        quantize_int8(self.transformer)
        return self

    def use_sampling(self, scheduler: str, steps: int, guidance: float) -> TesseraPipeline:
        """The solver, step count and guidance used when a call does not name them (a distilled student's own)."""
        self.scheduler = get_scheduler(scheduler)
        self.sampling = {"steps": int(steps), "guidance": float(guidance)}
        return self

    # ------------------------------------------------------------------ checking a request
    def check_request(
        self,
        prompt: str | list[str],
        negative_prompt: str | None = None,
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        width: int | None = None,
        height: int | None = None,
        duration_s: float | None = None,
        fps: int | None = None,
        seed: int | list[int] = 0,
        output_type: str = "np",
        output_path: str | Path | list[str | Path] | None = None,
        enhance: bool = True,
    ) -> Request:
        """Every input checked and resolved, without any compute; raises InputError (or UnsafePromptError).

        Steps and guidance left as None take the model's sampling defaults (`self.sampling`).
        """
        num_inference_steps = self.sampling["steps"] if num_inference_steps is None else num_inference_steps
        guidance_scale = self.sampling["guidance"] if guidance_scale is None else guidance_scale
        prompts = self._check_prompts(prompt, negative_prompt)
        seeds = _check_seeds(seed, len(prompts))
        steps = _check_int("num_inference_steps", num_inference_steps, 1, MAX_STEPS)
        guidance = _check_number("guidance_scale", guidance_scale, 0.0, MAX_GUIDANCE)
        frames, h, w, fps = self.resolve_size(width, height, duration_s, fps)
        if output_type not in OUTPUT_TYPES:
            raise InputError(f"output_type {output_type!r} is not one of {', '.join(OUTPUT_TYPES)}")
        paths = _check_output_paths(output_type, output_path, len(prompts))
        neg = plain_text(negative_prompt or "")
        single = isinstance(prompt, str)
        enhanced = [self.enhancer.enhance(p) for p in prompts] if enhance else [None] * len(prompts)
        return Request(prompts, neg, seeds, steps, guidance, frames, h, w, fps, output_type, paths, single, enhanced)

    def _check_prompts(self, prompt: str | list[str], negative_prompt: str | None) -> list[str]:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompt must be a string or a non-empty list of strings, got {type(prompt).__name__}")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise InputError(f"negative_prompt must be a string, got {type(negative_prompt).__name__}")
        prompts = [plain_text(p) for p in prompts]
        for p in prompts + [negative_prompt or ""]:
            if len(p) > MAX_PROMPT_CHARS:
                raise InputError(f"a prompt of {len(p)} characters is too long; keep it under {MAX_PROMPT_CHARS}")
        if not all(prompts):
            raise InputError(
                'the prompt is empty; describe the video, e.g. "a red circle moving left on a black background"'
            )
        for p in prompts:  # the negative prompt names what must NOT appear ("gore, nudity"): not filtered
            self.prompt_filter.enforce(p)  # UnsafePromptError before any compute
        return prompts

    def resolve_size(
        self, width: int | None, height: int | None, duration_s: float | None, fps: int | None
    ) -> tuple[int, int, int, int]:
        """(frames, height_px, width_px, fps) with the model's defaults for None; InputError for bad values."""
        cfg = self.config
        w = cfg.width_px if width is None else width
        h = cfg.height_px if height is None else height
        self.geometry.check_size(w, h)
        fps = _check_int("fps", cfg.fps if fps is None else fps, 1, MAX_FPS)
        dur = _check_number("duration_s", cfg.duration_s if duration_s is None else duration_s, 0.0, MAX_VIDEO_S)
        if dur <= 0:
            raise InputError(f"duration {dur} s must be more than 0 (up to {MAX_VIDEO_S:g} s)")
        return self.geometry.frames_for(dur, fps), h, w, fps

    def window_frames(self, fps: int) -> int:
        """The most frames one denoising pass makes (`config.max_duration_s`); longer videos are made in chunks."""
        return self.geometry.frames_for(self.config.max_duration_s, fps)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | None = None,
        *,
        latents: torch.Tensor | None = None,
        scheduler: str | FlowScheduler | None = None,
        callback: Callable[[int, int], None] | None = None,
        conditioning: list[ConditioningItem] | None = None,
        continues: Continuation | None = None,
        **settings,
    ) -> VideoOutput | list[VideoOutput]:
        """Generate one video per prompt; a list of prompts gives a list of outputs (one batch, one size).

        settings (see `check_request`): num_inference_steps (25), guidance_scale (4; 1 = no guidance),
        width, height, duration_s, fps (None: the model's defaults), seed (one per prompt, or one for
        all: prompt i then uses seed + i), output_type ("np" uint8 frames, "pt" float frames, "mp4"
        also written to output_path, "latent" no decode), output_path.
        enhance (True): rewrite each prompt with `self.enhancer` before the text encoder (out.enhanced_prompt).
        latents: start from these (B, C, T', H', W') instead of noise; scheduler: a name ("euler", ...)
        or an object, for this call; callback(step, total) after every model evaluation.
        conditioning: known frames placed in the video (tessera.conditioning.ConditioningItem, the
        same for every prompt): every edit, and each chunk of a long video, is this one argument.
        A video longer than `config.max_duration_s`, or one that `continues` given frames
        (tessera.edit.Continuation: duration_s is then the new part's), is made in chunks, each
        conditioned on the end of the one before (tessera.edit.generate_in_chunks), and is marked
        and recorded once, whole; its `latents` are the last chunk's.
        """
        # 1. check every input before any compute
        req = self.check_request(prompt, negative_prompt, **settings)
        solver = self._scheduler_for(scheduler)
        if continues is not None or req.frames > self.window_frames(req.fps):
            from tessera.edit import generate_in_chunks

            z, videos = generate_in_chunks(self, req, solver, callback, conditioning, continues, latents)
        else:
            z = self._render(req, solver, callback, conditioning, latents)
            if req.output_type == "latent":
                return self._outputs(req, z, [None] * len(z))
            videos = self._decode(z)  # 5. decode once
        # 6. mark, write and record every video
        return self._outputs(req, z, [self._deliver(req, i, frames) for i, frames in enumerate(videos)])

    def _render(self, req: Request, solver, callback, conditioning, latents=None) -> torch.Tensor:
        """Steps 2-4 for one window: the final latents (B, C, T', H', W') of a checked request."""
        # 2. encode the (enhanced) prompts, and the negative (or empty) prompt for guidance
        cond = self.text_encoder(req.encoded_prompts).to(self.device)
        uncond = self.text_encoder([req.negative_prompt] * len(req.prompts)).to(self.device)
        # 3. the starting latents: one generator per prompt, so a seed means the same video in any batch;
        #    the conditioning items encoded where they go
        z = self._initial_latents(req, latents)
        known = self._condition(req, conditioning, len(z))
        # 4. denoise all spacetime patches together, on the time schedule this shape was trained with
        return self._denoise(z, cond, uncond, req, solver, callback, known)

    # ------------------------------------------------------------------ editing (tessera.edit builds the items)
    def extend(self, video, prompt: str, **kwargs) -> VideoOutput:
        """The video followed (backwards=True: preceded) by duration_s of new frames; see tessera.edit.extend."""
        from tessera import edit

        return edit.extend(self, video, prompt, **kwargs)

    def interpolate(self, a, b, prompt: str, **kwargs) -> VideoOutput:
        """A clip from the end of `a` to the start of `b`; see tessera.edit.interpolate."""
        from tessera import edit

        return edit.interpolate(self, a, b, prompt, **kwargs)

    def animate(self, image, prompt: str, **kwargs) -> VideoOutput:
        """A clip whose first frame is `image`; see tessera.edit.animate."""
        from tessera import edit

        return edit.animate(self, image, prompt, **kwargs)

    def restyle(self, video, prompt: str, **kwargs) -> VideoOutput:
        """The video re-rendered under `prompt` (strength: how much to change); see tessera.edit.restyle."""
        from tessera import edit

        return edit.restyle(self, video, prompt, **kwargs)

    def inpaint(self, video, prompt: str, **kwargs) -> VideoOutput:
        """A box over a time range regenerated, the rest kept; see tessera.edit.inpaint."""
        from tessera import edit

        return edit.inpaint(self, video, prompt, **kwargs)

    def _scheduler_for(self, scheduler: str | FlowScheduler | None) -> FlowScheduler:
        if scheduler is None:
            return copy.deepcopy(self.scheduler)  # a fresh stepping state for every call
        if isinstance(scheduler, str):
            try:
                return get_scheduler(scheduler)
            except ValueError as e:
                raise InputError(str(e)) from None
        return scheduler

    def _initial_latents(self, req: Request, latents: torch.Tensor | None) -> torch.Tensor:
        shape = self.geometry.latent_shape(req.frames, req.height_px, req.width_px)  # (C, T', H', W')
        if latents is not None:
            if tuple(latents.shape) != (len(req.prompts), *shape):
                raise InputError(
                    f"latents of shape {tuple(latents.shape)} given; this request needs {(len(req.prompts), *shape)}"
                )
            return latents.float().to(self.device)
        noise = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in req.seeds]
        return torch.stack(noise).to(self.device)  # (B, C, T', H', W')

    def _condition(self, req: Request, items: list[ConditioningItem] | None, batch: int) -> Condition | None:
        if not items:
            return None
        known = encode_items(self.vae, self.geometry, list(items), req.frames, req.height_px, req.width_px)
        return known.repeat(batch).to(self.device)

    def _denoise(
        self, z, cond: TextEmbedding, uncond: TextEmbedding, req: Request, solver, callback, known: Condition | None
    ) -> torch.Tensor:
        """Integrate the flow from noise to data. With `known`, its tokens are held on their noise
        path and given their own times (tessera.conditioning), and a step where every token is
        held skips the model."""
        tokens = self.geometry.tokens(req.frames, req.height_px, req.width_px)
        solver.set_timesteps(req.steps, shift_for(self.config.timestep_shift, tokens, self.config.shift_ref_tokens))
        times, total = solver.timesteps.tolist() + [0.0], len(solver.timesteps)
        noise = z
        if known is not None:
            z = known.hold(z, noise, 1.0, times[0])
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
            velocity = guided_velocity(self.transformer, cond, uncond, req.guidance, self.reuse_text)
            for i, t in enumerate(solver.timesteps):
                t_clip = t.expand(z.shape[0]).to(self.device)
                if known is None:
                    v = velocity(z, t_clip)
                else:
                    t_tokens = known.token_times(t_clip, self.transformer.patch)
                    v = velocity(z, t_tokens) if (t_tokens >= t_clip[:, None]).any() else torch.zeros_like(z)
                z = solver.step(v, t, z)
                if known is not None:
                    z = known.hold(z, noise, times[i], times[i + 1])
                if callback is not None:
                    callback(i + 1, total)
        return z

    def _decode(self, z: torch.Tensor) -> list[np.ndarray]:
        """Normalised latents (B, C, T', H', W') -> uint8 frames (T, H, W, 3) per video, before the mark."""
        _, _, t, h, w = z.shape
        pixels = (1 + (t - 1) * self.vae.temporal_factor) * h * w * self.vae.spatial_factor**2
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
            if pixels > TILED_DECODE_ABOVE_PX:  # tiled and chunked in time, so memory stays bounded
                video = tiled_decode(self.vae, z.float(), TilingConfig())  # (B, 3, T, H, W)
            else:
                video = self.vae.decode(z.float())  # (B, 3, T, H, W)
        video = rearrange(video.clamp(-1, 1), "b c t h w -> b t h w c")
        return [((v + 1) * 127.5).round().byte().cpu().numpy() for v in video]

    def _deliver(self, req: Request, i: int, frames: np.ndarray) -> tuple[np.ndarray, str, dict, Path | None]:
        """Mark, write (atomically, when asked), then record: a record never points at a missing file."""
        from tessera.export import write_mp4

        generation_id = uuid.uuid4().hex
        frames = self.watermarker.mark(frames, self.name, generation_id)
        records = []

        def record(path: Path | None) -> None:
            records.append(self.ledger.record(
                frames, generation_id=generation_id, model_id=self.name, prompt=req.prompts[i], seed=req.seeds[i],
                steps=req.steps, guidance=req.guidance, fps=req.fps, path=path, model_hash=self.model_hash,
                filter_decision="allowed", enhanced_prompt=req.encoded_prompts[i],
            ))  # fmt: skip

        path = req.output_paths[i]
        if path is None:
            record(None)
        else:  # recorded once the file is in place; if recording fails, the file is removed again
            meta = {"comment": f"tessera model={self.name} generation={generation_id}"}
            path = write_mp4(frames, path, req.fps, metadata=meta, on_written=record)
        return frames, generation_id, dataclasses.asdict(records[0]), path

    def _outputs(self, req: Request, z: torch.Tensor, videos: list) -> VideoOutput | list[VideoOutput]:
        outs = []
        for i, video in enumerate(videos):
            frames, gid, record, path = video if video is not None else (None, None, None, None)
            if req.output_type == "pt" and frames is not None:
                frames = rearrange(torch.from_numpy(frames), "t h w c -> t c h w").float() / 255
            enhanced = req.encoded_prompts[i] if req.enhanced[i] is not None else None
            outs.append(
                VideoOutput(frames, z[i].cpu(), gid, record, path, req.prompts[i], req.seeds[i], req.fps, enhanced)
            )
        return outs[0] if req.single else outs


def _default_prompt_filter(text_encoder):
    """The shipped prompt filter, sharing the pipeline's text encoder when it is the bundled MiniLM."""
    from tessera.safety.prompt_filter import PromptFilter

    return PromptFilter(text_encoder=text_encoder)


_TERMINAL_CODE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")  # CSI, OSC, 2-byte
_INVISIBLE = re.compile("[\u200b\u200c\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]")  # zero width, bidi


def plain_text(prompt: str) -> str:
    """A prompt as one plain line: terminal escape codes (colours pasted from a terminal, or an attempt to
    rewrite someone's terminal when the prompt is printed) and invisible zero-width and direction marks
    removed, every other control character (newline, tab, NUL, ...) read as a space; spaces collapsed."""
    text = _INVISIBLE.sub("", _TERMINAL_CODE.sub("", prompt))
    return " ".join("".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text).split())


def guided_velocity(model, cond: TextEmbedding, uncond: TextEmbedding, guidance: float, reuse_text: bool = True):
    """The DiT as a velocity function with classifier-free guidance (one batched call for both branches).

    reuse_text: compute every cross-attention's text keys and values once, here, and reuse
    them at every step (`DiT.prepare_text`); call this under the same autocast as the
    steps, so the result equals recomputing them at each step.
    """
    text = cond if guidance == 1.0 else TextEmbedding.cat([uncond, cond])
    kwargs = text.as_kwargs()
    if reuse_text and hasattr(model, "prepare_text"):
        kwargs["text_kv"] = model.prepare_text(text.tokens, text.mask)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if guidance == 1.0:
            return model(x, t, **kwargs)
        v_u, v_c = model(torch.cat([x, x]), torch.cat([t, t]), **kwargs).chunk(2)
        return v_u + guidance * (v_c - v_u)

    return velocity


# ----------------------------------------------------------------------------- input checks


def _check_int(name: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise InputError(f"{name} must be a whole number in {lo}–{hi}, got {v!r}")
    if not lo <= v <= hi:
        raise InputError(f"{name} {v} is outside the supported range {lo}–{hi}")
    return int(v)


def _check_number(name: str, v, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number in {lo}–{hi}, got {v!r}")
    if not math.isfinite(v) or not lo <= v <= hi:
        raise InputError(f"{name} {v} is outside the supported range {lo}–{hi}")
    return float(v)


def _check_seeds(seed: int | list[int], n: int) -> list[int]:
    seeds = list(seed) if isinstance(seed, (list, tuple)) else None
    if seeds is None:
        first = _check_int("seed", seed, 0, MAX_SEED)
        seeds = [(first + i) % (MAX_SEED + 1) for i in range(n)]
    if len(seeds) != n:
        raise InputError(f"{len(seeds)} seeds given for {n} prompts; give one per prompt or a single seed")
    return [_check_int("seed", s, 0, MAX_SEED) for s in seeds]


def _check_output_paths(output_type: str, output_path, n: int) -> list[Path | None]:
    from tessera.export import check_output_path

    if output_type != "mp4":
        if output_path is not None:
            raise InputError(f'output_path is only used with output_type="mp4" (got output_type {output_type!r})')
        return [None] * n
    paths = list(output_path) if isinstance(output_path, (list, tuple)) else [output_path]
    if len(paths) != n or any(p is None for p in paths):
        raise InputError(f'output_type="mp4" needs one output_path per prompt ({n}); got {output_path!r}')
    checked = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            raise InputError(f"output {p} is a folder; give a file name ending in .mp4")
        try:
            checked.append(check_output_path(p))
        except (OSError, ValueError) as e:
            raise InputError(str(e)) from None
    if len(set(checked)) != len(checked):
        raise InputError("two prompts were given the same output_path")
    return checked
