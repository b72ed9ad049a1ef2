"""The native BERT encoder (tessera.models.bert) against transformers, its reference.

Same ids and masks as AutoTokenizer, the same last_hidden_state as BertModel, bit for bit, and a
TextEncoder that never imports transformers for a BERT folder.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tessera.config import TextConfig
from tessera.errors import InputError
from tessera.models.bert import BertTokenizer, is_native_bert, load_bert
from tessera.models.text import TextEncoder, default_model_path

transformers = pytest.importorskip("transformers")

PROMPTS = [
    "",  # the unconditional prompt
    "a red circle moving left on a black background",
    "A Red CIRCLE, moving LEFT!!! on a black... background???",
    "Ünïcödé café naïve Zürich 日本語の東京 😀🎥 emoji and ﬁ ligature",
    "a redd cirlce movng lfet on a blak backgrund wiht a bleu sqare",
    " ".join(f"word{i} and more" for i in range(80)),  # longer than 128 tokens
    "tabs\tand\nnewlines   and    spaces",
    "[CLS] [SEP] [PAD] [MASK] written in the prompt",
    "x" * 300,  # one word longer than WordPiece's 100 characters
    "  \t\n ",  # only whitespace
]
CASES = [("max_length", 32), ("max_length", 128), (True, 128), (True, 16)]


@pytest.fixture(scope="module")
def folder():
    return default_model_path()


@pytest.fixture(scope="module")
def reference(folder):
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    return tok, model


@pytest.fixture(scope="module")
def native(folder):
    return BertTokenizer(folder), load_bert(folder)


@pytest.mark.parametrize("padding,max_length", CASES)
def test_ids_and_masks_are_those_of_autotokenizer(reference, native, padding, max_length):
    want = reference[0](PROMPTS, padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
    got = native[0](PROMPTS, padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(got[key], want[key]), key
    assert got["input_ids"].shape[1] == (max_length if padding == "max_length" else max(got["attention_mask"].sum(1)))
    assert bool((got["input_ids"][:, 0] == 101).all())  # [CLS] first, even for the empty prompt
    assert got["attention_mask"][0].sum() == 2  # the empty prompt is [CLS] [SEP]


def test_vocabulary_is_that_of_autotokenizer(reference, native):
    assert native[0].get_vocab() == reference[0].get_vocab()
    assert native[0].vocab_size == reference[0].vocab_size


@pytest.mark.parametrize("padding,max_length", CASES)
def test_hidden_states_equal_bertmodel(reference, native, padding, max_length):
    batch = native[0](PROMPTS, padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        want = reference[1](**kwargs)
        got = native[1](**kwargs)
    assert got.last_hidden_state.shape == (len(PROMPTS), batch["input_ids"].shape[1], 384)
    if reference[1].config._attn_implementation == "sdpa":  # the same ops in the same order: bit-identical
        assert torch.equal(got.last_hidden_state, want.last_hidden_state)
        assert torch.equal(got.pooler_output, want.pooler_output)
    else:
        assert (got.last_hidden_state - want.last_hidden_state).abs().max() <= 1e-6


def test_every_layer_state_equals_bertmodel(reference, native):
    """output_hidden_states: the embeddings and each layer's states, as transformers returns them (the
    prompt filter reads a middle layer)."""
    batch = native[0](PROMPTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        want = reference[1](**kwargs, output_hidden_states=True).hidden_states
        got = native[1](**kwargs, output_hidden_states=True)
    assert native[1](**kwargs).hidden_states is None
    assert len(got.hidden_states) == len(want) == 7
    assert got.hidden_states[-1] is got.last_hidden_state
    for mine, theirs in zip(got.hidden_states, want):
        assert (mine - theirs).abs().max() <= 1e-5


def test_unpadded_batch_equals_bertmodel(reference, native):
    """No padding at all: transformers passes no mask to SDPA, and so must the native encoder."""
    batch = native[0](["a blue square", "a red circle"], padding=True, return_tensors="pt")
    assert bool(batch["attention_mask"].all())
    with torch.no_grad():
        want = reference[1](input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        got = native[1](input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert torch.equal(got.last_hidden_state, want.last_hidden_state)


def test_text_encoder_is_native_and_unchanged(reference):
    enc = TextEncoder()
    assert enc.native and enc.dim == 384
    out = enc(PROMPTS)
    tok, model = reference
    batch = tok(PROMPTS, padding="max_length", truncation=True, max_length=enc.cfg.max_tokens, return_tensors="pt")
    with torch.no_grad():
        want = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    assert torch.equal(out.tokens, want)
    assert torch.equal(out.mask, batch["attention_mask"].bool())


def test_text_encoder_does_not_import_transformers():
    code = (
        "import sys\n"
        "import tessera.models.text as t\n"
        "assert 'transformers' not in sys.modules, 'on import'\n"
        "e = t.TextEncoder()\n"
        "e(['a red circle']); e.empty()\n"
        "assert 'transformers' not in sys.modules, 'on load'\n"
        "print(e.dim)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "384"


def test_mismatched_weights_are_refused(folder, tmp_path):
    src = Path(folder)
    tensors = load_file(str(src / "model.safetensors"))
    cases = {  # what is wrong -> what the error must name
        r"missing \['encoder.layer.3.output.dense.bias'\];": {
            k: v for k, v in tensors.items() if k != "encoder.layer.3.output.dense.bias"
        },
        r"unexpected \['encoder.layer.6.output.dense.bias'\];": {
            **tensors,
            "encoder.layer.6.output.dense.bias": torch.zeros(384),
        },
        r"unexpected weight 'encoder.layer.0.attention.self.rotary.weight'": {
            **tensors,
            "encoder.layer.0.attention.self.rotary.weight": torch.zeros(384),
        },
        r"intermediate.dense.weight has shape \(1024, 384\)": {
            **tensors,
            "encoder.layer.0.intermediate.dense.weight": torch.zeros(1024, 384),
        },
    }
    for i, (message, state) in enumerate(cases.items()):
        dest = tmp_path / str(i)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("model.safetensors", "*.md", "1_Pooling"))
        save_file(state, str(dest / "model.safetensors"))
        with pytest.raises(InputError, match=message):
            load_bert(dest)
    cfg = json.loads((src / "config.json").read_text())
    (tmp_path / "0" / "config.json").write_text(json.dumps({**cfg, "position_embedding_type": "relative_key"}))
    with pytest.raises(InputError, match="position_embedding_type='relative_key'"):
        load_bert(tmp_path / "0")


def test_a_saved_bert_folder_loads_here_and_in_transformers(tmp_path):
    enc = TextEncoder(TextConfig(kind="hf", max_tokens=24), path=default_model_path())
    assert enc.native
    enc.save_pretrained(tmp_path / "enc")
    again = TextEncoder.from_pretrained(tmp_path / "enc")
    assert again.native and torch.equal(again(PROMPTS).tokens, enc(PROMPTS).tokens)
    model = transformers.AutoModel.from_pretrained(tmp_path / "enc" / "hf").eval()
    batch = enc.tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=24, return_tensors="pt")
    with torch.no_grad():
        want = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    assert torch.equal(enc(PROMPTS).tokens, want)


def test_other_architectures_still_load_through_transformers(folder, tmp_path):
    cfg = transformers.DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    torch.manual_seed(0)
    transformers.DistilBertModel(cfg).save_pretrained(tmp_path / "enc")
    transformers.AutoTokenizer.from_pretrained(folder).save_pretrained(tmp_path / "enc")
    assert not is_native_bert(tmp_path / "enc")
    enc = TextEncoder(TextConfig(kind="hf", max_tokens=16), path=tmp_path / "enc")
    assert not enc.native and enc.dim == 32
    out = enc(["a red circle", ""])
    assert out.tokens.shape == (2, 16, 32) and out.mask.sum(1).tolist() == [5, 2]
