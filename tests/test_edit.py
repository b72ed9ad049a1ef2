"""Editing tasks and long videos: each is conditioning items given to the one pipeline call."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tessera import edit
from tessera.cli import main
from tessera.conditioning import ConditioningItem, encode_items
from tessera.errors import InputError
from tessera.export import probe, write_mp4
from tessera.pipeline import TesseraPipeline
from tessera.safety.watermarker import Ledger

FAST = dict(num_inference_steps=1, width=128, height=128)


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint, tmp_path_factory):
    ledger = Ledger(tmp_path_factory.mktemp("edit_ledger") / "ledger.sqlite3")
    return TesseraPipeline.from_single_file(tiny_checkpoint, ledger=ledger)


def _clip(frames=13, h=128, w=128, seed=0):
    """Smooth random frames (blurred noise), so the watermark and H.264 change them only a little."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (frames, h // 16, w // 16, 3)).astype(np.uint8)
    return small.repeat(16, axis=1).repeat(16, axis=2)


def _known(pipe, items, frames):
    return encode_items(pipe.vae, pipe.geometry, items, frames, 128, 128).latents[0]  # (C, T', H', W')


def _diff(a, b) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


# ----------------------------------------------------------------------------- reading and fitting


def test_read_media_reads_images_and_picks_video_frames_at_the_model_rate(tmp_path):
    Image.fromarray(_clip(1, 96, 160)[0]).save(tmp_path / "a.png")
    Image.fromarray(_clip(1, 96, 160)[0]).save(tmp_path / "a.jpg", quality=95)
    for name in ("a.png", "a.jpg"):
        frames, fps = edit.read_media(tmp_path / name)
        assert frames.shape == (1, 96, 160, 3) and frames.dtype == np.uint8 and fps is None
    levels = np.arange(24) * 10  # frame i has brightness 10 i: which frames were picked is visible
    video = np.broadcast_to(levels[:, None, None, None], (24, 64, 64, 3)).astype(np.uint8)
    write_mp4(np.ascontiguousarray(video), tmp_path / "v.mp4", fps=24)
    frames, fps = edit.read_media(tmp_path / "v.mp4", fps=8)
    assert fps == 8 and len(frames) == 8
    picked = frames.reshape(8, -1).mean(1)
    np.testing.assert_allclose(picked, levels[::3], atol=4)
    native, native_fps = edit.read_media(tmp_path / "v.mp4")
    assert len(native) == 24 and native_fps == 24


def test_images_in_any_mode_read_as_they_look(tmp_path):
    """16-bit grey keeps its levels (PIL alone clips it to white), EXIF orientation is applied as viewers
    do, and grey, palette, alpha and CMYK images become RGB."""
    ramp = np.linspace(0, 65535, 96 * 64).reshape(64, 96).astype(np.uint16)  # (H, W) full 16-bit range
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    frames, _ = edit.read_media(tmp_path / "grey16.png")
    assert frames.shape == (1, 64, 96, 3)
    np.testing.assert_allclose(frames[0, ..., 0].astype(float), ramp / 257.0, atol=1.0)
    rgb = _clip(1, 64, 96)[0]
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": a phone photo taken upright
    Image.fromarray(rgb).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    frames, _ = edit.read_media(tmp_path / "phone.jpg")
    assert frames.shape == (1, 96, 64, 3)
    err = [np.abs(frames[0].astype(float) - np.rot90(rgb, k).astype(float)).mean() for k in (-1, 1)]
    assert err[0] < 6 < err[1], err  # clockwise, as the tag says (JPEG's own error aside)
    for mode in ("L", "P", "RGBA", "CMYK"):
        Image.fromarray(rgb).convert(mode).save(tmp_path / f"m{mode}.{'jpg' if mode == 'CMYK' else 'png'}")
        frames, _ = edit.read_media(tmp_path / f"m{mode}.{'jpg' if mode == 'CMYK' else 'png'}")
        assert frames.shape == (1, 64, 96, 3) and frames.dtype == np.uint8, mode


def test_a_variable_frame_rate_video_is_read_by_its_timestamps(tmp_path):
    """Phones record at a variable rate: the frame nearest each k/8 s is picked by time, not by index."""
    import fractions

    import av

    times = [0.0, 0.05, 0.1, 0.5, 0.52, 0.54, 1.0, 1.3, 1.31, 2.0]  # seconds; frame j has brightness 20 j + 10
    tb = fractions.Fraction(1, 1000)
    with av.open(str(tmp_path / "vfr.mp4"), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width = s.height = 64
        s.pix_fmt, s.time_base, s.codec_context.time_base = "yuv420p", tb, tb
        for j, t in enumerate(times):
            f = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 20 * j + 10, np.uint8), format="rgb24")
            f.pts, f.time_base = round(t * 1000), tb
            c.mux(s.encode(f))
        c.mux(s.encode())
    frames, fps = edit.read_media(tmp_path / "vfr.mp4", fps=8)
    nearest = [min(range(len(times)), key=lambda j: abs(times[j] - k / 8)) for k in range(17)]  # 0 .. 2 s
    assert fps == 8 and len(frames) == 17 and edit.probe_media(tmp_path / "vfr.mp4", 8)[0] == 17
    np.testing.assert_allclose(frames.reshape(17, -1).mean(1), [20 * j + 10 for j in nearest], atol=4)


def test_a_portrait_phone_video_reads_upright_as_players_show_it(tmp_path):
    from damage import portrait_phone_video

    video = np.zeros((9, 64, 96, 3), np.uint8)
    video[:, :, :24] = 255  # a white band on the left of the coded frames
    coded = write_mp4(video, tmp_path / "coded.mp4", fps=8)
    phone = portrait_phone_video(coded, tmp_path / "phone.mp4")
    frames, _ = edit.read_media(phone, fps=8)
    assert frames.shape == (9, 96, 64, 3) and edit.probe_media(phone, 8) == (9, 96, 64)
    assert frames[:, :20].mean() > 240 and frames[:, -60:].mean() < 15  # turned clockwise: the band is on top
    assert edit.read_media(coded, fps=8)[0].shape == (9, 64, 96, 3)  # no display matrix: as coded


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("this is a text file, not a video\n" * 20), "not a readable video"),
        (lambda p: Image.new("RGB", (5000, 8)).save(p, format="PNG"), "at most 4096 px"),
    ],
)
def test_unusable_inputs_are_refused_with_what_to_do(tmp_path, make, needle):
    path = tmp_path / "in.mp4"
    make(path)
    with pytest.raises(InputError, match=needle):
        edit.read_media(path)


def test_fit_to_covers_the_output_and_crops_the_centre():
    frame = np.zeros((1, 100, 200, 3), dtype=np.uint8)
    frame[:, :, 50:150] = 255  # a white centre band, black quarters left and right
    out = edit.fit_to(frame, 128, 128)  # scaled to 256x128, the middle 128 columns kept
    assert out.shape == (1, 128, 128, 3) and out.dtype == np.uint8
    assert out[:, :, 2:-2].min() > 240  # only the white band is left
    wide = edit.fit_to(frame, 256, 128)  # the same aspect: nothing cropped, black quarters kept
    assert wide[:, :, :60].max() < 15 and wide[:, :, 68:188].min() > 240
    assert edit.snap_shape(1920, 1080) == (448, 256) and edit.snap_shape(720, 1280) == (256, 448)
    assert edit.snap_shape(500, 480) == (256, 256)


# ----------------------------------------------------------------------------- the tasks


def test_extend_keeps_the_input_and_conditions_on_its_last_second(pipe):
    clip = _clip(13)
    out = pipe.extend(clip, "a red circle moving left", duration_s=2, seed=1, **FAST)
    assert out.frames.shape == (13 + 16, 128, 128, 3)
    assert _diff(out.frames[:13], clip) < 3  # the input itself, only marked
    context = [ConditioningItem(clip[-9:])]  # the last 9 frames (~1 s) begin the chunk: 3 latent frames kept
    torch.testing.assert_close(out.latents[:, :3], _known(pipe, context, 25)[:, :3])
    back = pipe.extend(clip, "a red circle moving left", duration_s=2, backwards=True, seed=1, **FAST)
    assert back.frames.shape == (16 + 13, 128, 128, 3)
    assert _diff(back.frames[16:], clip) < 3
    head = [ConditioningItem(clip[:8], start=17)]  # the first 8 frames end the chunk: 2 latent frames
    torch.testing.assert_close(back.latents[:, -2:], _known(pipe, head, 25)[:, -2:])


def test_animate_and_interpolate_hold_their_frames(pipe):
    image, clip = _clip(1, seed=2), _clip(13, seed=3)
    out = pipe.animate(image, "a red circle bouncing", seed=0, **FAST)
    assert out.frames.shape == (17, 128, 128, 3)
    torch.testing.assert_close(out.latents[:, :1], _known(pipe, [ConditioningItem(image)], 17)[:, :1])
    out = pipe.interpolate(clip, image, "a red circle moving right", duration_s=2, seed=0, **FAST)
    assert out.frames.shape == (17, 128, 128, 3)
    items = [ConditioningItem(clip[-5:]), ConditioningItem(image, start=16)]  # A's last 5 frames, B held at the end
    known = _known(pipe, items, 17)
    torch.testing.assert_close(out.latents[:, :2], known[:, :2])
    torch.testing.assert_close(out.latents[:, -1:], known[:, -1:])


def test_restyle_changes_the_input_and_inpaint_only_the_box(pipe):
    clip = _clip(13, seed=4)
    styled = pipe.restyle(clip, "a blue square", strength=0.6, seed=0, **FAST)
    assert styled.frames.shape == (13, 128, 128, 3)
    assert _diff(styled.frames, clip) > 10
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        pipe.restyle(clip, "a blue square", strength=1.0, **FAST)
    out = pipe.inpaint(clip, "a green triangle", box=(0, 0, 64, 64), from_s=0.5, to_s=1.0, output_type="latent", **FAST)
    known = _known(pipe, [ConditioningItem(clip)], 13)  # frames 4..7 -> latent frames 1 and 2, 64 px -> 4 cells
    hole = torch.zeros(known.shape[1:], dtype=torch.bool)
    hole[1:3, :4, :4] = True
    torch.testing.assert_close(out.latents[:, ~hole], known[:, ~hole])
    assert not torch.allclose(out.latents[:, hole], known[:, hole])
    for box, needle in [((0, 0, 200, 64), "inside the 128x128"), ((64, 0, 32, 64), "x0 < x1")]:
        with pytest.raises(InputError, match=needle):
            pipe.inpaint(clip, "a green triangle", box=box, from_s=0.5, to_s=1.0, **FAST)
    with pytest.raises(InputError, match="from < to"):
        pipe.inpaint(clip, "a green triangle", box=(0, 0, 64, 64), from_s=1.0, to_s=1.0, **FAST)


# ----------------------------------------------------------------------------- long videos


def test_a_12_s_video_is_97_frames_in_chunks_marked_and_recorded_once(pipe):
    before = len(pipe.ledger.entries())
    calls = []
    out = pipe("a red circle moving left", duration_s=12, seed=5, callback=lambda i, n: calls.append((i, n)), **FAST)
    assert out.frames.shape == (97, 128, 128, 3)  # 1 + 4 × 24 frames at 8 fps
    assert len(pipe.ledger.entries()) == before + 1
    assert pipe.ledger.entries()[-1].record.generation_id == out.generation_id
    steps = [i for i, _ in calls]
    assert steps == list(range(1, len(calls) + 1)) and calls[-1] == (5, 5)  # guide, first window, 3 chunks
    with pytest.raises(InputError, match="60"):
        pipe.check_request("a red circle", duration_s=61)


def test_the_same_seed_gives_the_same_long_video(pipe):
    def unmarked(seed):
        req = pipe.check_request("a blue square moving up", duration_s=5, seed=seed, **FAST)
        return edit.generate_in_chunks(pipe, req, pipe._scheduler_for(None), None, None, None, None)[1][0]

    a, b, c = unmarked(7), unmarked(7), unmarked(8)
    assert a.shape == (41, 128, 128, 3)  # a window of 33 frames, then 8 more
    np.testing.assert_array_equal(a, b)
    assert _diff(a[33:], c[33:]) > 1


def test_stretch_keeps_the_ends_and_spreads_the_motion_over_the_new_length():
    ramp = np.repeat(np.arange(0, 250, 50, dtype=np.uint8)[:, None, None, None], 3, axis=-1)  # 5 frames, 0..200
    out = edit.stretch(np.broadcast_to(ramp, (5, 4, 4, 3)).copy(), 17)
    assert out.shape == (17, 4, 4, 3)
    np.testing.assert_array_equal(out[::4], np.broadcast_to(ramp, (5, 4, 4, 3)))  # every 4th frame is an input frame
    np.testing.assert_allclose(np.diff(out[:, 0, 0, 0].astype(float)), 12.5, atol=1)  # evenly in between


def test_a_long_video_follows_a_guide_a_quarter_as_long_made_with_its_seed(pipe):
    req = pipe.check_request("a green square moving right", duration_s=6, seed=3, **FAST)
    one = edit._reseeded(req, req.frames, 0)
    guide = edit.guide_frames(pipe, one, pipe._scheduler_for(None), None, None, pipe.window_frames(req.fps))
    assert guide.shape == (49 + 4, 128, 128, 3)  # the video's length, and one latent group to spare
    short = pipe("a green square moving right", duration_s=1.5, seed=3, output_type="latent", **FAST)
    first = pipe._decode(short.latents[None])[0]  # 13 frames: a quarter of 6 s
    np.testing.assert_array_equal(guide[0:48:4], first[:12])  # each lands on a latent group boundary
    np.testing.assert_array_equal(guide[48], first[-1])  # the clip's end is the video's end


# ----------------------------------------------------------------------------- the CLI


def _cli(args, tiny_checkpoint, tmp_path):
    out = tmp_path / "out.mp4"
    argv = ["edit", *args, "--checkpoint", str(tiny_checkpoint), "-o", str(out), "--steps", "1"]
    return main(argv), out


def test_cli_edit_writes_one_video_and_prints_one_json_object(tiny_checkpoint, tmp_path, capsys):
    Image.fromarray(_clip(1, 96, 160)[0]).save(tmp_path / "still.png")
    args = ["animate", str(tmp_path / "still.png"), "--prompt", "a red circle bouncing", "--width", "128"]
    code, out = _cli([*args, "--height", "128", "--duration-s", "1"], tiny_checkpoint, tmp_path)
    assert code == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["output"] == str(out) and result["task"] == "animate" and result["enhanced_prompt"]
    info = probe(out)
    assert (info["width"], info["height"], info["frames"]) == (128, 128, 9) == (
        result["width"], result["height"], result["frames"]
    )  # fmt: skip
    assert "160x96 -> 128x128" in captured.err


@pytest.mark.parametrize(
    "args,needle",
    [
        (["extend", "{missing}", "--prompt", "a red circle"], "does not exist"),
        (["extend", "{text}", "--prompt", "a red circle"], "not a readable video"),
        (["restyle", "{empty}", "--prompt", "a red circle"], "empty"),
        (["restyle", "{video}", "--prompt", "a red circle", "--strength", "0"], "strictly between 0 and 1"),
        (["restyle", "{video}", "--prompt", "a red circle", "--strength", "1"], "strictly between 0 and 1"),
        (["inpaint", "{video}", "--prompt", "x", "--box", "0,0,64,64", "--from-s", "1", "--to-s", "0.5"], "before"),
        (["inpaint", "{video}", "--prompt", "x", "--box", "0,0,64", "--from-s", "0", "--to-s", "1"], "four whole"),
        (["inpaint", "{video}", "--prompt", "a red circle", "--box", "0,0,400,64", "--from-s", "0", "--to-s", "1",
          "--width", "128", "--height", "128"], "inside the 128x128"),
    ],
)  # fmt: skip
def test_cli_bad_input_exits_2_and_writes_nothing(args, needle, pipe, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("tessera.cli.edit.load_pipeline", lambda path, **components: pipe)  # loaded once, above
    files = {"missing": tmp_path / "nope.mp4", "text": tmp_path / "notes.mp4", "empty": tmp_path / "empty.mp4"}
    files["text"].write_text("not a video\n" * 50)
    files["empty"].write_bytes(b"")
    files["video"] = write_mp4(_clip(9), tmp_path / "in.mp4", fps=8)
    args = [a.format(**files) for a in args]
    code, out = _cli(args, tiny_checkpoint, tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert not out.exists()


def test_cli_refused_prompt_exits_3_and_writes_nothing(pipe, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("tessera.cli.edit.load_pipeline", lambda path, **components: pipe)
    before = len(pipe.ledger.entries())
    video = write_mp4(_clip(9), tmp_path / "in.mp4", fps=8)
    code, out = _cli(
        ["restyle", str(video), "--prompt", "a man being decapitated with blood spraying"], tiny_checkpoint, tmp_path
    )
    assert code == 3 and not out.exists() and len(pipe.ledger.entries()) == before
    assert "violence" in capsys.readouterr().err
