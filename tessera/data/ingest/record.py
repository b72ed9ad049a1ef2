"""The typed record of one clip as it goes through the stages, and one line of `manifest.jsonl`.

A record is plain data (strings, numbers, lists and dicts of them), so it pickles to a
worker process or a Ray task and round-trips through JSON: `ClipRecord.from_dict(r.to_dict()) == r`.
Fields a stage has not filled are None and are left out of the JSON line, so a rejected
source file has only id, source, reasons, detail and status, as it always had.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class Probe:
    """What the probe stage read from a source video."""

    duration_s: float
    fps: float
    width_px: int
    height_px: int
    codec: str
    bitrate_bps: int
    size_bytes: int
    bits_per_pixel: float

    @classmethod
    def from_dict(cls, data: dict) -> Probe:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


@dataclass
class ClipRecord:
    """One clip of a source video (or a source file rejected whole) and what every stage found."""

    id: str  # source path, shot index and time range (`shots.clip_id`); the source path for a rejected file
    source: str
    reasons: list[str] = field(default_factory=list)  # short codes of why it is rejected; [] while kept
    detail: str | None = None  # a sentence for people when a stage rejected it outright
    probe: Probe | None = None  # None for a source rejected before it was split
    shot: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    filters: dict[str, dict] | None = None  # name -> {"value", "threshold", "pass"[, "note"]}; None before split
    facts: dict | None = None  # measured facts the captioner uses (colour, backdrop, camera, ...)
    title: str | None = None
    caption: str | None = None
    captioner: str | None = None
    texts: list[str] | None = None  # candidate training texts: the title and the long captions
    shape: str | None = None  # training shape WIDTHxHEIGHT the clip is encoded at
    shard: str | None = None  # latent shard file name in DATASET/latents
    index: int | None = None  # row of the clip in its shard

    @property
    def kept(self) -> bool:
        return not self.reasons

    @property
    def status(self) -> str:
        return "kept" if self.kept else "rejected"

    @property
    def duration_s(self) -> float:
        return 0.0 if self.start_s is None or self.end_s is None else self.end_s - self.start_s

    def reject(self, result: dict) -> None:
        """Take a stage's rejection {"reason", "detail"}."""
        self.reasons, self.detail = [result["reason"]], result["detail"]

    # ------------------------------------------------------------------------- the stages' results

    @classmethod
    def rejected_source(cls, source: str, result: dict) -> ClipRecord:
        """A source file the probe or the split stage rejected whole."""
        return cls(id=source, source=source, reasons=[result["reason"]], detail=result["detail"])

    @classmethod
    def from_split(cls, source: str, probe: dict, clip: dict) -> ClipRecord:
        """A clip cut by the split stage (`shots.shots_to_clips`) from a probed source."""
        return cls(
            id=clip["id"],
            source=source,
            probe=Probe.from_dict(probe),
            shot=clip["shot"],
            start_s=clip["start_s"],
            end_s=clip["end_s"],
            reasons=list(clip["reasons"]),
            filters=dict(clip["filters"]),
        )

    def add_filters(self, result: dict) -> None:
        """The filter stage's result: measured filters and facts, or a rejection."""
        if "reason" in result:
            self.reject(result)
            return
        self.filters = {**(self.filters or {}), **result["filters"]}
        self.facts = result["facts"]
        self.reasons = [k for k, v in self.filters.items() if not v["pass"]]

    def add_captions(self, result: dict) -> None:
        """The caption stage's result: title, caption, captioner and texts, or a rejection."""
        if "reason" in result:
            self.reject(result)
            return
        self.title, self.caption = result["title"], result["caption"]
        self.captioner, self.texts = result["captioner"], list(result["texts"])

    # ------------------------------------------------------------------------- JSON

    def to_dict(self) -> dict:
        """The manifest line: every field that is set, and the status."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        out["status"] = self.status
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ClipRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if kwargs.get("probe") is not None:
            kwargs["probe"] = Probe.from_dict(kwargs["probe"])
        return cls(**kwargs)
