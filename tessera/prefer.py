"""Preference tuning from automatic feedback: sample, judge, pair, then Diffusion-DPO on the flow.

Recipe (`tessera prefer`, SPEC R17):

1. *Samples.* For grammar prompts whose (colour, shape, motion) combination `tessera eval`
   never asks for (held-out combinations and the evaluation's own combinations are left out, so
   the evaluation measures prompts and combinations not used to build pairs), draw `samples`
   noises each and run the model's guided ODE (`scheduler`, `steps`, `guidance`) to latents;
   decode them and keep the latents. With `wording` "rich" or "full", every other prompt is a
   caption in the vocabularies' words instead of the template (`prompt_texts`).
2. *Judge.* Every clip is read back from its pixels by `tessera eval`'s detectors: one point per
   attribute the prompt asked for and the clip shows (colour, shape, motion, background), plus
   `temporal_weight` × the mean of the consistency, flicker and smoothness scores
   (`tessera.temporal`), so among equally right clips the steadier one wins. Prompts are template
   wordings that the prompt filter allows; a refused one would be dropped, never sampled.
3. *Pairs.* Per prompt, the best and the worst clip when their scores differ by at least
   `min_gap` (a whole attribute by default): ties teach nothing.
4. *Training* (Diffusion-DPO, Wallace et al. 2023, in its flow-matching form as in Flow-DPO /
   VideoAlign): the policy starts from the model, a frozen copy is the reference. For a pair
   (x_w, x_l), one noise and one time t for both, the flow-matching error of each model on each
   latent gives

       inner = -β/2 · [(e_θ(x_w) - e_ref(x_w)) - (e_θ(x_l) - e_ref(x_l))],   loss = -log σ(inner)

   so the policy lowers its error on the preferred clip relative to the reference more than on
   the other. β sets how far it may move from the reference. Conditional branch only: the
   unconditional one (guidance) is the reference's.
5. *Save.* A generation checkpoint: the model's VAE and the tuned DiT, named `<name>-pref`.

Samples and training write as they go (`OUT/samples/`, `OUT/state.safetensors`): a stopped run,
re-run with the same command, resumes where it was. `OUT/run.json` records the model (SHA-256) and
settings; a re-run with others is refused (`tessera.run_folder`), more --train-steps continue the run.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tessera import checkpoint
from tessera.config import MAX_STEPS, ModelConfig
from tessera.data.world import BACKGROUNDS, all_combos, held_out_combos, simple_prompt
from tessera.diffusion.flow import sample_train_times
from tessera.distill import check_settings, latent_shape, load_frozen_dit, sampling_shift, save_with_dit
from tessera.errors import InputError
from tessera.models.dit import DiT
from tessera.models.text import TextEncoder
from tessera.models.vae import VideoVAE
from tessera.pipeline import default_device, guided_velocity
from tessera.run_folder import claim
from tessera.safety.ledger import file_sha256
from tessera.schedulers import get_scheduler

log = logging.getLogger(__name__)
JUDGED = ("colour", "shape", "motion", "background")
MAX_SAMPLES = 64  # clips per prompt


@dataclass
class PreferenceConfig:
    """What `tessera prefer` runs; sizes in pixels, duration in seconds."""

    prompts: int = 160  # prompts to sample
    samples: int = 4  # clips per prompt
    scheduler: str = "dpm++2m"
    steps: int = 12
    guidance: float = 4.0
    temporal_weight: float = 0.25  # judge: weight of the mean temporal score beside the 4 attribute points
    min_gap: float = 1.0  # a pair needs the best clip this many points above the worst
    beta: float = 1000.0  # DPO: how far the policy may move from the reference
    train_steps: int = 300
    batch: int = 4  # pairs per training step
    lr: float = 1e-5
    save_every: int = 50
    height_px: int = 256
    width_px: int = 256
    duration_s: float = 2.0
    seed: int = 0
    wording: str = "template"  # "rich" / "full": every other prompt a caption from the vocabularies' train / all words

    def __post_init__(self):
        from tessera.data.world.captions import WORDINGS

        check_settings(
            self, {}, counts=("prompts", "steps", "train_steps", "batch", "save_every"), choices={"wording": WORDINGS}
        )
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or not 2 <= self.samples <= MAX_SAMPLES:
            raise InputError(
                f"--samples {self.samples!r}: a pair needs at least 2 clips per prompt, and {MAX_SAMPLES} is the most"
            )
        if self.steps > MAX_STEPS:  # at least 1: a count above
            raise InputError(f"--steps {self.steps} is outside 1..{MAX_STEPS}; 12 is the default")
        for name, hint in (
            ("beta", "1000 is the default"),
            ("min_gap", "1 is one attribute"),
            ("temporal_weight", "0.25 is the default"),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"--{name.replace('_', '-')} {v!r} must be a finite number, not negative; {hint}")
        for name in ("beta", "min_gap"):
            if getattr(self, name) == 0:
                label = "no pull toward the preferred clip" if name == "beta" else "pairs of equally judged clips"
                raise InputError(f"--{name.replace('_', '-')} 0 would train on {label}; pass a positive value")


def prompt_texts(cases: list[tuple[str, str, str, str]], wording: str, seed: int) -> list[str]:
    """The prompt of each case: the template wording, or with `wording` "rich" or "full" every other one a
    caption drawn from the vocabularies (`tessera.data.world.captions.caption`), so the pairs also teach the
    model the words people use. Sentence shapes come from the vocabularies' train half, as in training."""
    from tessera.data.world.captions import WORDINGS, caption
    from tessera.data.world.scenes import spec_for

    if wording not in WORDINGS:
        raise ValueError(f"wording {wording!r} is not one of {', '.join(WORDINGS)}")
    rng = np.random.default_rng(seed + 7)
    texts = []
    for i, case in enumerate(cases):
        rich = wording != "template" and i % 2 == 1
        texts.append(caption(spec_for(*case, seed=seed + i), rng, wording) if rich else simple_prompt(*case))
    return texts


def preference_prompts(n: int, seed: int) -> list[tuple[str, str, str, str]]:
    """`n` (colour, shape, motion, background) cases from combinations `tessera eval` never asks for.

    Held-out combinations stay held out, and the combinations of `eval_cases(120)` (the default
    evaluation) are left out too, so adherence after tuning is measured on combinations not used
    to build pairs. Backgrounds cycle, so every combination appears with each before repeating.
    """
    from tessera.eval import eval_cases

    used = {(c.colour, c.shape, c.motion) for c in eval_cases(120)} | set(held_out_combos())
    free = [c for c in all_combos() if c not in used]
    if not free:
        raise ValueError("every grammar combination is held out or evaluated; none is left to build pairs from")
    rng = np.random.default_rng(seed)
    order = [free[i] for i in rng.permutation(len(free))]
    bgs = list(BACKGROUNDS)
    return [(*order[i % len(order)], bgs[(i % len(order) + i // len(order)) % len(bgs)]) for i in range(n)]


def judge(frames: np.ndarray, case: tuple[str, str, str, str], temporal_weight: float) -> tuple[float, dict]:
    """Score of one clip (T, H, W, 3) uint8 for its (colour, shape, motion, background): attribute points
    plus `temporal_weight` × the mean temporal score; and what the judge saw."""
    from tessera.eval import analyze
    from tessera.temporal import temporal_measures

    a = analyze(frames)
    seen = {"colour": a.colour, "shape": a.shape, "motion": a.motion, "background": a.background}
    points = sum(seen[k] == v for k, v in zip(JUDGED, case))
    temporal = temporal_measures(frames, case[2])
    # None: not asked of this motion (size while growing); NaN: no object found to measure, which counts as 0
    steady = [v if np.isfinite(v) else 0.0 for k, v in temporal.items() if k != "flicker_0_255" and v is not None]
    return points + temporal_weight * float(np.mean(steady)), {"seen": seen, "points": int(points)}


@torch.no_grad()
def sample_and_judge(
    dit: DiT, vae: VideoVAE, text: TextEncoder, cfg: ModelConfig, pc: PreferenceConfig, folder: Path | None = None
) -> dict:
    """{latents (P, S, C, T', H', W'), scores (P, S), points (P, S)}, the cases and their prompt texts, for P
    prompts × S samples.

    The models run on the DiT's device (a GPU samples in bigger batches); noise is drawn and
    results kept on the CPU. With `folder`, each prompt batch is written there
    (`samples-{start:06d}.safetensors`) and read back on a re-run; the noise of a batch depends
    only on the seed and its start, so a resumed run equals an unbroken one.
    """
    from tessera.safety.prompt_filter import PromptFilter

    cases = preference_prompts(pc.prompts, pc.seed)
    texts = prompt_texts(cases, pc.wording, pc.seed)
    flt = PromptFilter(text_encoder=text)
    refused = [t for t in texts if not flt.check(t).allowed]
    if refused:
        raise ValueError(f"the prompt filter refuses grammar prompts such as {refused[0]!r}; fix the filter first")
    shape = latent_shape(cfg, pc)
    shift = sampling_shift(cfg, shape)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    latents = torch.empty((pc.prompts, pc.samples, *shape))
    scores = torch.empty((pc.prompts, pc.samples))
    points = torch.empty((pc.prompts, pc.samples), dtype=torch.long)
    device = next(dit.parameters()).device
    per_batch = max(1, (32 if device.type == "cuda" else 8) // pc.samples)  # prompts per batch: 8 clips (CPU), 32 (GPU)
    for i in range(0, pc.prompts, per_batch):
        n = min(per_batch, pc.prompts - i)
        path = None if folder is None else folder / f"samples-{i:06d}.safetensors"
        if path is not None and path.is_file():
            try:
                saved, _, _ = checkpoint.load(path)
            except checkpoint.CheckpointError as e:  # cut short or damaged: made again
                log.warning("sampling again: %s", e)
                saved = {"latents": latents[:0]}
            if saved["latents"].shape == (n, pc.samples, *shape):
                latents[i : i + n], scores[i : i + n], points[i : i + n] = (
                    saved["latents"],
                    saved["scores"],
                    saved["points"],
                )
                continue
        g = torch.Generator().manual_seed(pc.seed * 1_000_003 + i)
        x = torch.randn((n * pc.samples, *shape), generator=g).to(device)
        prompts = [texts[i + j] for j in range(n) for _ in range(pc.samples)]
        cond, uncond = text(prompts).to(device), text([""] * len(prompts)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            velocity = guided_velocity(dit, cond, uncond, pc.guidance)
            sched = get_scheduler(pc.scheduler)
            sched.set_timesteps(pc.steps, shift)
            for t in sched.timesteps:
                x = sched.step(velocity(x, t.expand(x.shape[0]).to(x.device)), t, x)
            video = vae.decode(x.float()).clamp(-1, 1)  # (B, 3, T, H, W)
        frames = ((video.permute(0, 2, 3, 4, 1) + 1) * 127.5).round().byte().cpu().numpy()  # (B, T, H, W, 3)
        judged = [judge(f, cases[i + b // pc.samples], pc.temporal_weight) for b, f in enumerate(frames)]
        latents[i : i + n] = x.float().cpu().view(n, pc.samples, *shape)
        scores[i : i + n] = torch.tensor([s for s, _ in judged]).view(n, pc.samples)
        points[i : i + n] = torch.tensor([d["points"] for _, d in judged]).view(n, pc.samples)
        if path is not None:
            part = {"latents": latents[i : i + n], "scores": scores[i : i + n], "points": points[i : i + n]}
            checkpoint.save(path, part, {}, kind="preference_samples")
        log.info("samples %d/%d prompts, mean points %.2f", i + n, pc.prompts, points[: i + n].float().mean().item())
    return {"latents": latents, "scores": scores, "points": points, "cases": cases, "texts": texts}


def build_pairs(samples: dict, min_gap: float) -> list[tuple[int, int, int]]:
    """(prompt, preferred sample, other sample) per prompt whose best and worst scores differ by ≥ `min_gap`."""
    pairs = []
    for p, s in enumerate(samples["scores"]):
        best, worst = int(s.argmax()), int(s.argmin())
        if float(s[best] - s[worst]) >= min_gap:
            pairs.append((p, best, worst))
    return pairs


def dpo_loss(policy, reference, x_w, x_l, cond: dict, t: torch.Tensor, noise: torch.Tensor, beta: float):
    """Diffusion-DPO on the flow (module docstring). x_w, x_l, noise (B, C, T', H', W'); t (B,).

    Returns (loss, implicit accuracy: share of pairs whose inner term is positive, mean inner term).
    """
    tb = t.view(-1, 1, 1, 1, 1)
    x = torch.cat([(1 - tb) * x_w + tb * noise, (1 - tb) * x_l + tb * noise])  # (2B, ...) winners, then others
    target = torch.cat([noise - x_w, noise - x_l])
    tt = torch.cat([t, t])
    both = {k: torch.cat([v, v]) for k, v in cond.items()}
    err = (policy(x, tt, **both).float() - target).pow(2).mean(dim=(1, 2, 3, 4))  # (2B,)
    with torch.no_grad():
        ref = (reference(x, tt, **both).float() - target).pow(2).mean(dim=(1, 2, 3, 4))
    e_w, e_l = (err - ref).chunk(2)
    inner = -0.5 * beta * (e_w - e_l)
    return F.softplus(-inner).mean(), (inner > 0).float().mean().item(), inner.mean().item()


def train_preference(
    dit: DiT,
    samples: dict,
    pairs: list[tuple[int, int, int]],
    text: TextEncoder,
    cfg: ModelConfig,
    pc: PreferenceConfig,
    state_path: Path | None = None,
) -> tuple[DiT, dict]:
    """DPO-tune a copy of `dit` on `pairs`; returns (tuned DiT, {loss, accuracy, inner} per step).

    Trains on the DiT's device; pairs are drawn on the CPU, so the order of batches does not
    depend on the device. With `state_path`, weights, optimiser and random state are saved every
    `pc.save_every` steps, and a re-run resumes from the last save.
    """
    from tessera.training.state import TrainState

    if not pairs:
        raise InputError(
            f"no preference pairs: no prompt's clips differ by --min-gap {pc.min_gap:g} or more in the judge's "
            "score; sample more prompts or clips per prompt, or lower --min-gap (1 = one attribute)"
        )
    device = next(dit.parameters()).device
    policy = copy.deepcopy(dit).train().requires_grad_(True)
    reference = dit.eval().requires_grad_(False)
    opt = torch.optim.AdamW(policy.parameters(), lr=pc.lr, weight_decay=0.0)
    shift = sampling_shift(cfg, tuple(samples["latents"].shape[2:]))
    e = text(samples["texts"]).to(device)
    latents = samples["latents"].to(device)
    index = torch.tensor(pairs)  # (N, 3)
    g = torch.Generator().manual_seed(pc.seed + 1)
    state = TrainState(state_path) if state_path is not None else None
    start = state.load(policy, opt) if state is not None else 0
    if start:
        g.set_state(state.tensors["rng.prefer"])
    keys = ("loss", "accuracy", "inner")
    history = {k: state.tensors[f"history.{k}"].tolist() if start else [] for k in keys}
    for step in range(start, pc.train_steps):
        rows = index[torch.randint(0, len(index), (pc.batch,), generator=g)]
        p, w, lo = rows.unbind(1)
        t = sample_train_times(pc.batch, shift, generator=g).to(device)
        noise = torch.randn((pc.batch, *latents.shape[2:]), generator=g).to(device)
        x_w, x_l = latents[p.to(device), w.to(device)], latents[p.to(device), lo.to(device)]
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss, acc, inner = dpo_loss(policy, reference, x_w, x_l, e[p.to(device)].as_kwargs(), t, noise, pc.beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        for k, v in zip(keys, (loss.item(), acc, inner)):
            history[k].append(v)
        if step % 25 == 0:
            log.info("preference step %d/%d loss %.4f accuracy %.2f", step, pc.train_steps, loss.item(), acc)
        if state is not None and ((step + 1) % pc.save_every == 0 or step + 1 == pc.train_steps):
            extra = {"rng.prefer": g.get_state(), **{f"history.{k}": torch.tensor(v) for k, v in history.items()}}
            state.save(step + 1, policy, opt, asdict(pc), extra=extra)
    return policy.eval().requires_grad_(False), history


def tune(model_path: str | Path, out: str | Path, pc: PreferenceConfig, device: str | None = None) -> dict:
    """The whole recipe: generation checkpoint -> samples -> pairs -> DPO -> `out/preferred.safetensors`.

    device: where the models run; default a GPU when there is one, else the CPU.
    """
    from tessera.models.autoencoder import video_vae_from_checkpoint

    device = torch.device(device) if device else default_device()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors, config, meta, cfg, dit = load_frozen_dit(model_path)
    if "sampling" in meta:
        raise checkpoint.CheckpointError(
            f"{model_path} is a few-step student; tune the model it was distilled from, then distil again"
        )
    claim(out, "run.json", {**asdict(pc), "model_sha256": file_sha256(model_path)}, free=("train_steps", "save_every"))
    vae = video_vae_from_checkpoint(model_path, tensors, config, meta).eval().to(device)
    dit = dit.to(device)
    text = TextEncoder(cfg.text, device=device)
    torch.manual_seed(pc.seed)
    samples = sample_and_judge(dit, vae, text, cfg, pc, folder=out / "samples")
    pairs = build_pairs(samples, pc.min_gap)
    log.info("%d pairs from %d prompts", len(pairs), pc.prompts)
    tuned, history = train_preference(dit, samples, pairs, text, cfg, pc, state_path=out / "state.safetensors")
    name = f"{meta.get('name', Path(model_path).stem)}-pref"
    path = out / "preferred.safetensors"
    extra = {"preference_recipe": json.dumps(asdict(pc)), "tuned_from": Path(model_path).name}
    save_with_dit(path, tensors, tuned, config, {**meta, "name": name, **extra})  # the model's VAE, unchanged
    pts = samples["points"].float()
    k = max(1, len(history["loss"]) // 10)
    summary = {
        "checkpoint": str(path),
        "prompts": pc.prompts,
        "clips": int(pts.numel()),
        "mean_points": round(pts.mean().item(), 3),  # of 4, the model before tuning, on the pair prompts
        "all_four_share": round((pts == 4).float().mean().item(), 4),
        "pairs": len(pairs),
        "loss_first": float(np.mean(history["loss"][:k])),
        "loss_last": float(np.mean(history["loss"][-k:])),
        "accuracy_last": float(np.mean(history["accuracy"][-k:])),
    }
    (out / "prefer.json").write_text(json.dumps({"config": asdict(pc), **summary, "history": history}, indent=2))
    return summary
