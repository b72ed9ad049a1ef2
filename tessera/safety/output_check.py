"""Optional check of the generated frames before they are written: a local image classifier.

The same local-model interface as `tessera prepare --unsafe-model` (`data.ingest.filters.UnsafeClassifier`):
a `transformers` image-classification folder saved with `save_pretrained`, its unsafe label names,
and a threshold on the summed probability of those labels over the first, middle and last frame.
No classifier ships with Tessera; none is downloaded. NudeNet was considered as a default and not
adopted: its wheel declares MIT but carries the AGPL-3.0 text, it needs onnxruntime (not a
dependency here) besides its 12 MB detector, and its accuracy cannot be measured here (no images of
what it must catch can be made or fetched on this machine), so a default would be an unmeasured claim.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tessera.errors import UnsafePromptError

CATEGORY = "unsafe-output"


@dataclass
class OutputCheckConfig:
    model: str = ""  # local image-classification folder; "" turns the check off
    unsafe_labels: tuple[str, ...] = field(default=("nsfw", "unsafe", "porn", "hentai", "sexy", "explicit"))
    max_unsafe: float = 0.5  # refuse above this summed probability of the unsafe labels


class OutputCheck:
    """Scores frames (T, H, W, 3) uint8 and refuses those above `max_unsafe`; a no-op without a model."""

    def __init__(self, cfg: OutputCheckConfig):
        self.cfg = cfg
        self._classifier = None
        if cfg.model:
            from tessera.data.ingest.filters import UnsafeClassifier

            self._classifier = UnsafeClassifier(cfg.model, cfg.unsafe_labels)

    def decision(self, frames: np.ndarray) -> dict:
        """{"checked", "value", "threshold", "pass"}: what the ledger records as the output decision."""
        if self._classifier is None:
            return {"checked": False, "value": None, "threshold": None, "pass": True}
        p = self._classifier.score(frames)
        return {
            "checked": True,
            "value": round(p, 4),
            "threshold": self.cfg.max_unsafe,
            "pass": p <= self.cfg.max_unsafe,
        }

    def check(self, frames: np.ndarray) -> dict:
        """The decision, or UnsafePromptError (exit 3) when the frames score above the threshold."""
        decision = self.decision(frames)
        if not decision["pass"]:
            raise UnsafePromptError(
                CATEGORY,
                f"the generated video scored {decision['value']} unsafe (threshold {decision['threshold']}); "
                "it was not written; change the prompt",
            )
        return decision
