"""A native BERT encoder and its WordPiece tokenizer, read from a `transformers` model folder.

`transformers` costs seconds to import, most of the cold start of `tessera generate`; the default text
encoder (MiniLM-L6, a 6-layer BERT) needs none of it. This module runs the same network with the same
ops in the same order as `transformers.BertModel` (embeddings, then post-norm layers of
scaled-dot-product self-attention and an erf-GELU feed-forward), so its `last_hidden_state` is
bit-identical, and tokenizes with the `tokenizers` package directly, padding and truncating the way
`AutoTokenizer(..., padding=..., truncation=True, max_length=L)` does.

A folder is read from `config.json` (`model_type: bert`), `model.safetensors` (the `transformers`
parameter names) and `tokenizer.json`.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from tessera.errors import InputError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


# ---------------------------------------------------------------------------------------------- config
@dataclass
class BertConfig:
    """The fields of a `transformers` BERT `config.json` that shape the encoder."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_folder(cls, folder: str | Path) -> BertConfig:
        raw = read_config(folder)
        checks = {
            "model_type": (raw.get("model_type"), "bert"),
            "hidden_act": (raw.get("hidden_act", "gelu"), "gelu"),
            "position_embedding_type": (raw.get("position_embedding_type", "absolute"), "absolute"),
            "is_decoder": (raw.get("is_decoder", False), False),
        }
        for key, (given, expected) in checks.items():
            if given != expected:
                raise InputError(
                    f"{folder}/config.json has {key}={given!r}; the native BERT encoder supports {key}={expected!r} "
                    "only; load this folder through transformers (TextEncoder falls back to it for other models)"
                )
        cfg = cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
        if cfg.hidden_size % cfg.num_attention_heads:
            raise InputError(
                f"{folder}/config.json: hidden_size {cfg.hidden_size} is not a multiple of "
                f"num_attention_heads {cfg.num_attention_heads}; fix the config"
            )
        return cfg


def read_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"expected a model config at {path}, could not read it ({e}); pass a model folder") from e


def is_native_bert(folder: str | Path) -> bool:
    """True when the folder holds a BERT encoder this module can run without `transformers`."""
    folder = Path(folder)
    if not all((folder / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json")):
        return False
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return raw.get("model_type") == "bert"


# ---------------------------------------------------------------------------------------------- model
@dataclass
class BertOutput:
    """What `transformers`' BertModel returns, the parts Tessera reads."""

    last_hidden_state: torch.Tensor  # (B, L, D)
    pooler_output: torch.Tensor | None  # (B, D): tanh(dense([CLS])), None without a pooler
    hidden_states: tuple[torch.Tensor, ...] | None = None  # with output_hidden_states: embeddings, then each layer


class _Linear(nn.Linear):
    """nn.Linear left uninitialised: `load_bert` fills every weight, random init would only cost start-up time."""

    def reset_parameters(self) -> None:
        pass


class _Embedding(nn.Embedding):
    """nn.Embedding left uninitialised, as `_Linear`."""

    def reset_parameters(self) -> None:
        pass


class BertLayer(nn.Module):
    """Post-norm transformer layer: x = LN(x + attn(x)); x = LN(x + W2 gelu(W1 x))."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        d, heads = cfg.hidden_size, cfg.num_attention_heads
        self.heads = heads
        self.scale = (d // heads) ** -0.5
        self.query, self.key, self.value = _Linear(d, d), _Linear(d, d), _Linear(d, d)
        self.attn_out = _Linear(d, d)
        self.attn_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.ffn_in = _Linear(d, cfg.intermediate_size)
        self.ffn_out = _Linear(cfg.intermediate_size, d)
        self.ffn_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        q = rearrange(self.query(x), "b l (h e) -> b h l e", h=self.heads)  # (B, H, L, E)
        k = rearrange(self.key(x), "b l (h e) -> b h l e", h=self.heads)
        v = rearrange(self.value(x), "b l (h e) -> b h l e", h=self.heads)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)  # (B, H, L, E)
        a = rearrange(a, "b h l e -> b l (h e)")  # (B, L, D)
        x = self.attn_norm(self.attn_out(a) + x)
        return self.ffn_norm(self.ffn_out(F.gelu(self.ffn_in(x))) + x)


class BertEncoder(nn.Module):
    """BERT without heads: token ids (B, L) and mask (B, L) -> BertOutput.

    Built uninitialised; `load_bert` builds one from a folder.
    """

    def __init__(self, cfg: BertConfig, pooler: bool = True):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.word = _Embedding(cfg.vocab_size, d)
        self.position = _Embedding(cfg.max_position_embeddings, d)
        self.token_type = _Embedding(cfg.type_vocab_size, d)
        self.embed_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.pooler = _Linear(d, d) if pooler else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BertOutput:
        n = input_ids.shape[1]
        if n > self.cfg.max_position_embeddings:
            raise InputError(
                f"{n} tokens given, the encoder reads at most {self.cfg.max_position_embeddings}; truncate the input"
            )
        positions = torch.arange(n, device=input_ids.device)[None]  # (1, L)
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        x = self.word(input_ids) + self.token_type(types) + self.position(positions)  # (B, L, D)
        x = self.embed_norm(x)
        attn_mask = key_padding_mask(attention_mask, n)
        states = [x]
        for layer in self.layers:
            x = layer(x, attn_mask)
            states.append(x)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None  # (B, D)
        return BertOutput(x, pooled, tuple(states) if output_hidden_states else None)


def key_padding_mask(mask: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """(B, L) 1/0 mask -> (B, 1, L, L) bool for SDPA (True = attend), or None when nothing is padded."""
    if mask is None or bool(mask.all()):
        return None  # no bias at all: what transformers passes to SDPA in this case
    return mask.bool()[:, None, None, :].expand(-1, 1, n, -1)  # (B, 1, L, L)


# ---------------------------------------------------------------------------------------------- weights
_LAYER_NAMES = {  # native name within a layer -> transformers name within `encoder.layer.{i}`
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "attn_norm": "attention.output.LayerNorm",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
    "ffn_norm": "output.LayerNorm",
}
_TOP_NAMES = {
    "word": "embeddings.word_embeddings",
    "position": "embeddings.position_embeddings",
    "token_type": "embeddings.token_type_embeddings",
    "embed_norm": "embeddings.LayerNorm",
    "pooler": "pooler.dense",
}
_HF_TO_NATIVE = {v: k for k, v in _TOP_NAMES.items()} | {f"encoder.layer.{{}}.{v}": k for k, v in _LAYER_NAMES.items()}
# buffers and heads a checkpoint may carry that the encoder does not use
_IGNORED = re.compile(r"^(embeddings\.position_ids|embeddings\.token_type_ids|cls\..*)$")


def hf_name(name: str) -> str:
    """Native parameter name -> the `transformers` BertModel name (`layers.0.query.weight` -> ...)."""
    m = re.fullmatch(r"layers\.(\d+)\.(\w+)\.(weight|bias)", name)
    if m:
        return f"encoder.layer.{m[1]}.{_LAYER_NAMES[m[2]]}.{m[3]}"
    module, leaf = name.rsplit(".", 1)
    return f"{_TOP_NAMES[module]}.{leaf}"


def native_name(name: str) -> str | None:
    """`transformers` name -> native name; None for an ignored buffer or head; raises for anything else."""
    name = name.removeprefix("bert.")
    if _IGNORED.match(name):
        return None
    layer = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)", name)
    if layer:
        module = _HF_TO_NATIVE.get(f"encoder.layer.{{}}.{layer[2]}")
        native = f"layers.{layer[1]}.{module}.{layer[3]}"
    else:
        head, _, leaf = name.rpartition(".")
        module = _HF_TO_NATIVE.get(head) if leaf in ("weight", "bias") else None
        native = f"{module}.{leaf}"
    if module is None:
        raise InputError(
            f"unexpected weight {name!r} in a BERT checkpoint; expected a transformers BertModel's weights"
        )
    return native


def load_bert(folder: str | Path, device: torch.device | str = "cpu") -> BertEncoder:
    """The frozen encoder of a BERT folder, weights loaded strictly (every parameter, exact shapes)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = BertConfig.from_folder(folder)
    path = folder / "model.safetensors"
    raw = load_file(str(path), device=str(torch.device(device)))
    state = {n: t for k, t in raw.items() if (n := native_name(k)) is not None}
    model = BertEncoder(cfg, pooler="pooler.weight" in state)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(hf_name(k) for k in expected.keys() - state.keys())
    extra = sorted(hf_name(k) for k in state.keys() - expected.keys())
    if missing or extra:
        found = ", ".join(
            f"{word} {names[:4]}" for word, names in (("missing", missing), ("unexpected", extra)) if names
        )
        raise InputError(
            f"{path} does not match its config.json: {found}; "
            "pass a folder whose weights and config come from the same BertModel"
        )
    for k, shape in expected.items():
        if state[k].shape != shape:
            raise InputError(
                f"{path}: {hf_name(k)} has shape {tuple(state[k].shape)}, config.json implies {tuple(shape)}; "
                "pass a folder whose weights and config come from the same BertModel"
            )
    state = {k: t.float() for k, t in state.items()}
    model.load_state_dict(state, strict=True, assign=True)  # assign: the loaded tensors, no copy
    return model.to(device).eval().requires_grad_(False)


def save_bert(model: BertEncoder, src: str | Path, folder: str | Path) -> None:
    """Write `model` as a `transformers` BERT folder (config.json from `src`, HF weight names)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(read_config(src), indent=2) + "\n")
    tensors = {hf_name(k): t.detach().cpu().contiguous() for k, t in model.state_dict().items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


# ---------------------------------------------------------------------------------------------- tokenizer
class BertTokenizer:
    """`tokenizer.json` through the `tokenizers` package: lists of prompts -> padded id and mask tensors.

    Called like a `transformers` tokenizer with `return_tensors="pt"`: `padding="max_length"` pads to
    `max_length`, `padding=True` to the longest prompt; `truncation=True` cuts each prompt to
    `max_length` tokens, [CLS] and [SEP] included.
    """

    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self._tok = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self._lock = threading.Lock()  # padding and truncation are settings of the shared Tokenizer
        self.pad_token = _pad_token(self.folder)
        self.pad_token_id = self._tok.token_to_id(self.pad_token)
        if self.pad_token_id is None:
            raise InputError(f"{self.folder}/tokenizer.json has no pad token {self.pad_token!r}; pass a BERT folder")

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=False)

    def get_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=True)

    def __call__(
        self,
        texts: str | list[str],
        padding: bool | str = False,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str = "pt",
    ) -> dict[str, torch.Tensor]:
        """{"input_ids", "token_type_ids", "attention_mask"}: (B, L) int64 each."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if return_tensors != "pt" or padding not in (False, True, "longest", "max_length", "do_not_pad"):
            raise InputError(
                f"padding={padding!r}, return_tensors={return_tensors!r} given; the native tokenizer supports "
                "padding in (False, True, 'longest', 'max_length') with return_tensors='pt'"
            )
        if (truncation or padding == "max_length") and max_length is None:
            raise InputError("truncation or padding='max_length' needs max_length; pass max_length=L")
        with self._lock:
            self._configure(padding, truncation, max_length)
            encodings = self._tok.encode_batch(texts, add_special_tokens=True)
        if len({len(e.ids) for e in encodings}) > 1:
            raise InputError("prompts of different lengths without padding; pass padding=True or 'max_length'")
        return {
            "input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),
            "token_type_ids": torch.tensor([e.type_ids for e in encodings], dtype=torch.long),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
        }

    def _configure(self, padding: bool | str, truncation: bool, max_length: int | None) -> None:
        if truncation:
            self._tok.enable_truncation(max_length, stride=0, strategy="longest_first", direction="right")
        else:
            self._tok.no_truncation()
        if padding in (False, "do_not_pad"):
            self._tok.no_padding()
        else:
            length = max_length if padding == "max_length" else None
            self._tok.enable_padding(
                direction="right", pad_id=self.pad_token_id, pad_type_id=0, pad_token=self.pad_token, length=length
            )

    def save_pretrained(self, folder: str | Path) -> None:
        """Copy the tokenizer's files (the tokenizer is immutable), so the folder loads here and in transformers."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            if (self.folder / name).is_file():
                shutil.copyfile(self.folder / name, folder / name)


def _pad_token(folder: Path) -> str:
    """The pad token named by tokenizer_config.json or special_tokens_map.json, else BERT's [PAD]."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            tok = json.loads((folder / name).read_text()).get("pad_token")
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(tok, dict):
            tok = tok.get("content")
        if isinstance(tok, str):
            return tok
    return "[PAD]"
