"""Watermark and perceptual hash: round trips, robustness to H.264 / resize / crop / flip, keys, no false positives."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from tessera.export import read_video, write_mp4
from tessera.safety import fingerprint as fp
from tessera.safety import watermark as wm
from tessera.safety.keys import LEGACY_KEY, InstallationKey

T, H, W = 17, 256, 256
PAYLOAD = wm.make_payload("tessera-small", "gen-0001")
KEY = InstallationKey(bytes(range(32)), "test").derive("watermark")  # a fixed installation key
KEYS = (KEY,)


# -- clips ----------------------------------------------------------------------------------------


def disks_clip(seed: int = 0, t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """Coloured disks drifting over a dark, slightly graded background. (T, H, W, 3) uint8"""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    centres = rng.uniform(0.2, 0.8, (4, 2)) * [h, w]
    velocity = rng.uniform(-4, 4, (4, 2))  # px per frame
    radius = rng.uniform(18, 40, 4)
    colour = rng.uniform(60, 240, (4, 3))
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        frame = np.array([18, 20, 30], np.float32) + (yy / h * 20)[..., None]  # (H, W, 3)
        for c, v, r, col in zip(centres, velocity, radius, colour):
            cy, cx = c + v * i
            frame[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = col
        out[i] = np.clip(frame, 0, 255)
    return out


def texture_clip(seed: int = 1, t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """Smooth random texture panning 2 px down and 1 px right per frame. (T, H, W, 3) uint8"""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.normal(size=(h + 2 * t, w + t, 3)), (3, 3, 0))
    field = (field - field.mean()) / field.std() * 40 + 120
    return np.stack([np.clip(field[2 * i : 2 * i + h, i : i + w], 0, 255) for i in range(t)]).astype(np.uint8)


def flat_shapes_clip(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """A flat red square sliding across a flat grey background, like the shapes world. (T, H, W, 3) uint8"""
    out = np.full((t, h, w, 3), 110, np.uint8)
    for i in range(t):
        out[i, 100:160, 20 + 6 * i : 80 + 6 * i] = (220, 40, 40)
    return out


def noise_clip(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(2).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


# -- attacks --------------------------------------------------------------------------------------


def h264(frames: np.ndarray, tmp_path, crf: int = 28) -> np.ndarray:
    """Round trip through libx264 (yuv420p) in an MP4 file, written and read with PyAV."""
    path = write_mp4(frames, tmp_path / f"clip_{crf}.mp4", fps=16, crf=crf)
    decoded, _ = read_video(path)
    assert decoded.shape == frames.shape
    return decoded


def resize(frames: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC)) for f in frames])


def centre_crop(frames: np.ndarray, keep: float = 0.8) -> np.ndarray:
    _, h, w, _ = frames.shape
    ch, cw = int(h * keep), int(w * keep)
    top, left = (h - ch) // 2, (w - cw) // 2
    return frames[:, top : top + ch, left : left + cw]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


@pytest.fixture(scope="module")
def clips() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (original, marked)."""
    out = {}
    for name, clip in (("disks", disks_clip()), ("texture", texture_clip())):
        out[name] = (clip, wm.embed(clip, PAYLOAD, KEY))
    return out


# -- watermark ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["disks", "texture"])
def test_round_trip_is_invisible_and_exact(clips, name):
    original, marked = clips[name]
    assert marked.shape == original.shape and marked.dtype == np.uint8
    assert 38.0 <= psnr(original, marked) < 60.0  # hidden, but actually there
    payload, confidence = wm.extract(marked, KEYS)
    assert payload == PAYLOAD
    assert confidence > 0.9


@pytest.mark.parametrize("name", ["disks", "texture"])
def test_survives_h264_crf28(clips, name, tmp_path):
    decoded = h264(clips[name][1], tmp_path)
    assert wm.extract(decoded, KEYS)[0] == PAYLOAD


@pytest.mark.parametrize("name", ["disks", "texture"])
@pytest.mark.parametrize("size", [192, 384])
def test_survives_resize(clips, name, size):
    found = wm.detect(resize(clips[name][1], size, size), KEYS)
    assert found.payload == PAYLOAD
    assert found.scale == pytest.approx(size / W, rel=0.01)


@pytest.mark.parametrize("name", ["disks", "texture"])
def test_survives_central_crop(clips, name):
    cropped = centre_crop(clips[name][1], 0.8)
    assert cropped.shape[1:3] == (204, 204)
    assert wm.extract(cropped, KEYS)[0] == PAYLOAD


def test_survives_crop_resize_and_h264_together(clips, tmp_path):
    attacked = h264(resize(centre_crop(clips["disks"][1], 0.8), 154, 154), tmp_path)
    assert wm.extract(attacked, KEYS)[0] == PAYLOAD


@pytest.mark.parametrize(
    "make", [noise_clip, flat_shapes_clip, disks_clip, texture_clip], ids=["noise", "flat", "disks", "texture"]
)
def test_unmarked_clips_give_none(make):
    payload, confidence = wm.extract(make(), KEYS)
    assert payload is None
    assert confidence < 0.5


def test_unmarked_h264_clip_gives_none(tmp_path):
    assert wm.extract(h264(disks_clip(seed=3), tmp_path), KEYS)[0] is None


def test_wrong_payload_is_not_read(clips):
    other = wm.embed(clips["disks"][0], wm.make_payload("tessera-small", "gen-0002"), KEY)
    payload = wm.extract(other, KEYS)[0]
    assert payload is not None and payload != PAYLOAD
    assert wm.payload_matches(payload, "tessera-small", "gen-0002")
    assert wm.payload_matches(payload, "tessera-small") and not wm.payload_matches(payload, "tessera-base")


def test_another_installations_mark_is_found_but_not_read(clips):
    """Same sync, other secret data layout and tag: sync found, no payload, under our key or the legacy one."""
    other_key = InstallationKey(bytes(range(1, 33)), "other").derive("watermark")
    found = wm.detect(wm.embed(clips["disks"][0], PAYLOAD, other_key), (KEY, LEGACY_KEY))
    assert found.sync_found and found.payload is None and found.key is None
    assert wm.detect(wm.embed(clips["disks"][0], PAYLOAD, other_key), (other_key,)).payload == PAYLOAD


def test_legacy_marks_still_read_and_say_so(clips):
    found = wm.detect(wm.embed(clips["texture"][0], PAYLOAD, LEGACY_KEY), (KEY, LEGACY_KEY))
    assert found.payload == PAYLOAD and found.key == LEGACY_KEY


def test_a_keyed_payload_cannot_be_forged_with_the_public_layout():
    """Bits coded under the legacy (public) key do not pass the keyed check, and vice versa."""
    soft = 1.0 - 2.0 * wm.encode_bits(PAYLOAD, LEGACY_KEY)
    assert wm.decode_bits(soft, LEGACY_KEY) == PAYLOAD and wm.decode_bits(soft, KEY) is None
    assert not np.array_equal(wm.layout(KEY).bit, wm.layout(LEGACY_KEY).bit)
    assert np.array_equal(wm.layout(KEY).sync, wm.layout(LEGACY_KEY).sync)


def test_survives_horizontal_flip(clips):
    found = wm.detect(clips["disks"][1][:, :, ::-1], KEYS)
    assert found.payload == PAYLOAD and found.mirrored


def test_frames_smaller_than_a_tile_give_none():
    found = wm.detect(np.zeros((1, 8, 8, 3), np.uint8), KEYS)
    assert found.payload is None and found.confidence == 0.0


def test_code_corrects_noise_and_rejects_random_bits():
    rng = np.random.default_rng(0)
    coded = wm.encode_bits(PAYLOAD, KEY)  # (188,)
    assert coded.shape == (wm.CODED_BITS,)
    noisy = (1.0 - 2.0 * coded) + rng.normal(0, 0.8, coded.shape)  # ~11 % of hard bits wrong
    assert np.mean((noisy < 0) != coded) > 0.05
    assert wm.decode_bits(noisy, KEY) == PAYLOAD
    assert all(wm.decode_bits(rng.normal(size=wm.CODED_BITS), KEY) is None for _ in range(200))


def test_embed_and_extract_are_fast():
    clip = disks_clip(seed=5)
    start = time.process_time()
    assert wm.extract(wm.embed(clip, PAYLOAD, KEY), KEYS)[0] == PAYLOAD
    assert time.process_time() - start < 2.0


@pytest.mark.parametrize("shape", [(17, 256, 256), (3, 48, 70), (2, 20, 9), (1, 131, 257)])
@pytest.mark.parametrize("sigma", [1.5, 4.0, 8.0])
def test_blur_is_scipys_gaussian_filter(shape, sigma):
    # numpy's FFT stands in for SciPy on the generation path (its import alone is 0.2 s of a cold start)
    y = (np.random.default_rng(0).random(shape) * 255).astype(np.float32)
    y[:, : shape[1] // 2] = 0  # a flat part, where an FFT leaves its rounding noise
    blurred = wm.gaussian_blur(y, sigma)
    assert blurred.dtype == np.float32 and blurred.shape == y.shape
    np.testing.assert_allclose(blurred, gaussian_filter(y, (0, sigma, sigma)), rtol=0, atol=1e-4)
    y64 = y.astype(np.float64)
    np.testing.assert_allclose(wm.gaussian_blur(y64, sigma), gaussian_filter(y64, (0, sigma, sigma)), rtol=0, atol=1e-9)


def test_fft_sizes_are_the_smallest_2_3_5_smooth_lengths():
    assert [wm._fft_size(n) for n in (1, 7, 11, 97, 268, 1001)] == [1, 8, 12, 100, 270, 1024]


@pytest.mark.parametrize("name", ["disks", "texture", "flat_shapes", "flat"])
def test_embed_marks_as_with_scipys_blur(name, monkeypatch):
    clip = {
        "disks": disks_clip(seed=3),
        "texture": texture_clip(seed=3),
        "flat_shapes": flat_shapes_clip(),
        "flat": np.full((5, 256, 256, 3), 90, np.uint8),
    }[name]
    ours = wm.embed(clip, PAYLOAD, KEY)
    monkeypatch.setattr(wm, "gaussian_blur", lambda a, s: gaussian_filter(a, (0, s, s)))
    theirs = wm.embed(clip, PAYLOAD, KEY)
    differ = ours != theirs
    assert np.abs(ours.astype(int) - theirs).max() <= 1 and differ.mean() < 1e-4, (differ.sum(), differ.size)


def test_hash_dct_is_scipys():
    from scipy.fft import dctn

    x = np.random.default_rng(1).random((fp.HASH_GRID_PX, fp.HASH_GRID_PX))
    low = fp._dct_matrix(fp.HASH_GRID_PX)
    np.testing.assert_allclose(low @ x @ low.T, dctn(x, norm="ortho"), atol=1e-12)


def test_embed_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        wm.embed(np.zeros((2, 256, 256, 3), np.float32), PAYLOAD, KEY)
    with pytest.raises(ValueError, match="too small"):
        wm.embed(np.zeros((2, 64, 64, 3), np.uint8), PAYLOAD, KEY)
    with pytest.raises(ValueError, match="8 bytes"):
        wm.embed(disks_clip(t=2), b"short", KEY)


# -- fingerprint ----------------------------------------------------------------------------------


def test_video_hash_is_robust_and_discriminative(clips, tmp_path):
    disks, texture = clips["disks"][0], clips["texture"][0]
    h = fp.video_hash(disks)
    assert fp.hash_distance(h, fp.video_hash(h264(disks, tmp_path))) < 0.1
    assert fp.hash_distance(h, fp.video_hash(resize(disks, 192, 192))) < 0.1
    assert fp.hash_distance(h, fp.video_hash(clips["disks"][1])) < 0.1  # the watermark does not move it
    assert fp.hash_distance(h, fp.video_hash(texture)) > 0.3
    assert fp.hash_distance(h, fp.video_hash(disks_clip(seed=9))) > 0.3
