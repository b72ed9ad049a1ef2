"""The pipeline as swappable components: schedulers, text encoders, pretrained folders, one output path."""

import json

import numpy as np
import pytest
import torch

from tessera.cli import main
from tessera.config import PRESETS, DiTConfig, TextConfig
from tessera.errors import InputError
from tessera.models.dit import DiT
from tessera.models.text import TextEncoder, default_model_path
from tessera.models.vae import VideoVAE
from tessera.pipeline import TesseraPipeline
from tessera.safety import watermark
from tessera.safety.ledger import prompt_sha256
from tessera.safety.provenance import read_manifest
from tessera.schedulers import FlowScheduler

SMALL = dict(num_inference_steps=2, width=128, height=128, duration_s=1.0)


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return TesseraPipeline.from_single_file(tiny_checkpoint)


class HeunInTheTest(FlowScheduler):
    """Heun's method written here only: two model calls per interval, the last interval Euler."""

    name = "heun-test"
    order = 2

    def _times(self, sigmas):
        inner = [t for a, b in zip(sigmas[:-2], sigmas[1:-1]) for t in (a, b)]
        return torch.stack([*inner, sigmas[-2]])

    def reset(self):
        self.pending = None

    def step(self, velocity, t, x):
        i, self.step_index = self.step_index, self.step_index + 1
        k, second = divmod(i, 2)
        last = k == len(self.sigmas) - 2
        dt = self.sigmas[k + 1] - self.sigmas[k]
        if last:
            return x + dt * velocity
        if not second:
            self.pending = (x, velocity)
            return x + dt * velocity
        x0, v0 = self.pending
        return x0 + dt * (v0 + velocity) / 2


def test_a_scheduler_defined_elsewhere_drives_the_pipeline(pipe):
    calls = []
    heun = pipe(
        "a red circle",
        scheduler=HeunInTheTest(),
        output_type="latent",
        callback=lambda i, n: calls.append((i, n)),
        **SMALL,
    )
    euler = pipe("a red circle", output_type="latent", **SMALL)
    assert calls == [(1, 3), (2, 3), (3, 3)]  # 2 intervals: Heun, then a last Euler step
    assert heun.latents.shape == euler.latents.shape
    assert not torch.allclose(heun.latents, euler.latents)


def test_a_text_encoder_of_another_width_with_a_dit_to_match(tmp_path):
    import transformers

    src = default_model_path()
    cfg = transformers.BertConfig(
        vocab_size=transformers.AutoTokenizer.from_pretrained(src).vocab_size,
        hidden_size=48, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "enc")
    transformers.AutoTokenizer.from_pretrained(src).save_pretrained(tmp_path / "enc")
    text = TextEncoder(TextConfig(kind="hf", max_tokens=16), path=tmp_path / "enc")
    assert text.dim == 48
    base = PRESETS["tiny"]
    vae = VideoVAE(base.vae)
    with pytest.raises(InputError, match="text_dim"):
        TesseraPipeline(DiT(base.dit), vae, text)
    dit = DiT(DiTConfig(in_channels=8, width=64, depth=1, heads=2, text_dim=48))
    torch.nn.init.normal_(dit.final.weight, std=0.02)
    out = TesseraPipeline(dit, vae, text, device="cpu")("a blue square", **SMALL)
    assert out.frames.shape == (9, 128, 128, 3)
    # it survives a pretrained folder, with the encoder's own files inside it (no machine path)
    pipe = TesseraPipeline(dit, vae, text, device="cpu")
    pipe.save_pretrained(tmp_path / "p")
    assert str(tmp_path / "enc") not in (tmp_path / "p" / "text_encoder" / "config.json").read_text()
    again = TesseraPipeline.from_pretrained(tmp_path / "p", device="cpu")
    a = pipe("a blue square", output_type="latent", **SMALL).latents
    assert torch.equal(a, again("a blue square", output_type="latent", **SMALL).latents)


def test_save_and_load_pretrained_give_identical_outputs(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    assert index["transformer"] == ["tessera", "DiT"] and index["vae"] == ["tessera", "VideoVAE"]
    for part in ("transformer", "vae"):
        cfg = json.loads((tmp_path / "p" / part / "config.json").read_text())
        assert "attention" not in cfg and "checkpoint_activations" not in cfg  # runtime switches are not config
        assert (tmp_path / "p" / part / "model.safetensors").is_file()
    again = TesseraPipeline.from_pretrained(tmp_path / "p", device="cpu")
    assert again.name == pipe.name and again.config == pipe.config
    a = pipe("a red circle", seed=4, output_type="latent", **SMALL).latents
    b = again("a red circle", seed=4, output_type="latent", **SMALL).latents
    assert torch.equal(a, b)
    vae = VideoVAE.from_pretrained(tmp_path / "p" / "vae")  # one component alone
    for (k, v), w in zip(pipe.vae.state_dict().items(), vae.state_dict().values()):
        assert torch.equal(v.cpu(), w), k


def test_every_video_leaving_the_pipeline_is_marked_and_recorded(pipe, tmp_path):
    out = pipe("a red circle", seed=1, output_type="mp4", output_path=tmp_path / "a.mp4", **SMALL)
    assert out.path == tmp_path / "a.mp4" and out.path.is_file()
    keys = (pipe.watermarker.mark_key,)  # marks read only under the installation key
    payload, _ = watermark.extract(out.frames, keys)
    assert watermark.payload_matches(payload, pipe.name, out.generation_id)
    assert watermark.extract(out.frames)[0] is None  # not under the public legacy key
    assert out.record["generation_id"] == out.generation_id and out.record["prompt"] is None  # hash only
    assert out.record["prompt_sha256"] == prompt_sha256("a red circle") and len(out.record["model_hash"]) == 64
    assert read_manifest(out.path).signature_valid  # signed once the file was in place
    arr = pipe("a red circle", seed=1, **SMALL)  # frames only: marked and recorded too
    assert watermark.payload_matches(watermark.extract(arr.frames, keys)[0], pipe.name, arr.generation_id)
    assert arr.generation_id != out.generation_id and arr.record is not None


def test_a_prompt_is_read_as_one_plain_line(pipe):
    """Terminal codes, invisible marks and control characters never reach the model, the record or a log."""
    pasted = "\x1b[31ma red\x1b[0m circle\r\n moving\tleft\x00 \u202e\x1b]0;owned\x07on a black\u200b background"
    req = pipe.check_request(pasted, negative_prompt="\x1b[1mblur\x1b[0m,\nnoise")
    assert req.prompts == ["a red circle moving left on a black background"] and req.negative_prompt == "blur, noise"
    assert req.enhanced[0].text == "a red circle moving left on a black background"
    with pytest.raises(InputError, match="empty"):
        pipe.check_request("\x1b[0m\u200b\x00\n")


def test_a_video_made_in_python_is_found_by_verify(pipe, tmp_path, capsys):
    out = pipe("a green square", seed=2, output_type="mp4", output_path=tmp_path / "v.mp4", **SMALL)
    capsys.readouterr()
    assert main(["verify", "--json", str(out.path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ledger"]["generation_id"] == out.generation_id and result["mark"]["origin"] == "ours"


def test_negative_prompt_latents_and_batches(pipe):
    base = pipe("a red circle", seed=3, output_type="latent", **SMALL).latents
    neg = pipe("a red circle", "a blue square", seed=3, output_type="latent", **SMALL).latents
    assert not torch.equal(base, neg)  # the negative prompt replaces the empty prompt of guidance
    start = torch.randn(1, *base.shape, generator=torch.Generator().manual_seed(3))
    given = pipe("a red circle", latents=start, output_type="latent", **SMALL).latents
    assert torch.equal(given, base)  # seed 3's noise given as latents is seed 3
    outs = pipe(["a", "b"], seed=[7, 8], **SMALL)
    assert [o.seed for o in outs] == [7, 8] and all(o.frames.dtype == np.uint8 for o in outs)
    frames = pipe("a", output_type="pt", **SMALL).frames
    assert frames.shape == (9, 3, 128, 128) and 0 <= frames.min() and frames.max() <= 1


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(guidance_scale=float("nan")),
        dict(guidance_scale=float("inf")),
        dict(width=0),
        dict(height=0),
        dict(fps=0),
        dict(seed=2**64),
        dict(seed=-1),
        dict(num_inference_steps=0),
        dict(duration_s=float("nan")),
        dict(width=130),
        dict(output_type="gif"),
        dict(output_type="mp4"),
    ],
)
def test_bad_requests_are_refused_before_any_compute(pipe, kwargs, monkeypatch):
    monkeypatch.setattr(pipe, "_denoise", lambda *a: pytest.fail("generation ran"))
    with pytest.raises(InputError):
        pipe("a red circle", **kwargs)


def test_output_path_that_is_a_folder_is_refused_before_generation(pipe, tmp_path, monkeypatch):
    monkeypatch.setattr(pipe, "_denoise", lambda *a: pytest.fail("generation ran"))
    with pytest.raises(InputError, match="folder"):
        pipe("a red circle", output_type="mp4", output_path=tmp_path)
