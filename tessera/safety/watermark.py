"""Invisible video watermark: a keyed, tiled spread-spectrum pattern in luma.

Frames are uint8 arrays (T, H, W, 3). `embed` hides 8 payload bytes under a key; `detect` /
`extract` return them, or None, with a confidence and the key that read them. Pure numpy (no SciPy, whose
import alone costs a cold `tessera generate` 0.2 s), no BLAS-heavy steps: ~0.1 s to embed and ~0.3 s
to extract a 17-frame 256×256 clip on a busy 2-core CPU.

Pattern
-------
One tile of `TILE_PX`×`TILE_PX` px is defined by its 2-D spectrum: every integer frequency
k = (kx, ky) cycles per tile with 6 ≤ |k| ≤ 24 (`BAND_CYCLES`: periods of 5–21 px, which
H.264 keeps and which stay below Nyquist down to a 0.5× resize) gets a key-derived random
phase; that is 842 bins in one half-plane. `SYNC_BINS` of them have a fixed sign (the sync pattern); the
rest are dealt out among the `CODED_BITS` coded bits, each bit flipping the sign of its ~3
bins. The sync bins and their phases are public (derived from `keys.LEGACY_KEY`), so every mark is
found by the same search; which data bin carries which bit, and its phase, derive from the
installation's secret key (`layout(key)`). The tile repeats over the frame in pixel coordinates, is scaled by a perceptual amplitude
(`FLAT_LEVELS` on flat areas, growing with the square root of local detail, zero where a pixel
would clip; overall RMS at most `strength`) and is added equally to R, G and B, which changes
luma only. Every frame carries the same pattern, so H.264's skip and inter prediction keep it
in static areas instead of having to re-code it.

Payload
-------
64 bits (`make_payload`: 2 bytes of hash of the model id, 6 bytes of hash of the generation id)
+ a 24-bit check, terminated by 6 zeros and
coded with the rate-1/2, K=7 convolutional code (0o171, 0o133): 188 coded bits, decoded by
soft-decision Viterbi, which corrects ~15 % raw bit errors. The check is an HMAC-SHA256 tag under
the secret key (`_check`), so a payload cannot be forged or read without the key; files marked
before installation keys carry a CRC (polynomial 0x864CFB) under the public legacy key, and still
read, as legacy.

Extraction
----------
Luma is high-passed and divided by its local RMS (so busy regions do not drown quiet ones),
then averaged over frames. Because the pattern is tiled, a crop only shifts the phase of each
frequency bin and a uniform resize only stretches the frequency comb. So: one zero-padded FFT
of the image (`OVERSAMPLE`× finer than its size, origin at the frame centre), from which the
bins of every candidate scale in `SCALES` (0.5×–2×, 1 % steps) are interpolated; each bin is
reduced to its phase (phase-only correlation, which whitens the content); one FFT over the sync
bins scores every shift within a tile. The best (scale, shift) is refined on a finer scale
and ½-px shift grid. Then frames are weighted by how much sync each shows at that place (after
H.264 most of the pattern lives in the intra frame) and the weighted mean is searched again.
The data bins at the best place give soft bits for the Viterbi decoder.

When the sync is not found, the search is repeated on the horizontally flipped pattern (the same
spectrum, read at -kx), so a mirrored copy still reads.

A payload is returned only when both the sync score (a z-score: phase-only bins make it
N(0, 1) per hypothesis without a watermark) reaches `Z_DETECT`, and the decoded bits pass one
given key's check (a wrong read survives with probability 2^-24). A found sync whose bits pass
no key's check is another installation's mark (or one damaged past reading). The best sync score of unmarked clips, over
all ~2·10^6 scale × shift hypotheses, was at most 6.4 on 292 clips.

Robust to H.264 (crf 28, yuv420p), uniform resizes within the searched 0.5×–2×, crops (a
100×100 px cut from a 256×256 clip still reads), horizontal flips and combinations of them
(figures: benchmarks/safety.py). Not robust to rotation or aspect-changing resizes, nor to
H.264 at CRF 35; weakest on smooth or heavily textured content in fast motion after strong
compression (the pattern then survives mostly in the intra frame). The sync pattern is public:
anyone with the code can find that a clip is marked and try to scrub it, but not read or forge
the payload.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tessera.safety.keys import LEGACY_KEY

PAYLOAD_BITS = 64
CRC_BITS = 24
CRC_POLY = 0x864CFB  # CRC-24 generator without its leading x^24 term
CONV_K = 7  # constraint length of the rate-1/2 convolutional code
CONV_POLYS = (0o171, 0o133)
CODED_BITS = 2 * (PAYLOAD_BITS + CRC_BITS + CONV_K - 1)  # 188

TILE_PX = 128  # period of the pattern in pixels of the frames given to `embed`
BAND_CYCLES = (6.0, 24.0)  # radius of the used frequency annulus, in cycles per tile
SYNC_BINS = 250
DEFAULT_STRENGTH = 2.8  # most RMS luma change, 8-bit levels: PSNR ≥ 20 log10(255 / strength) ≈ 39 dB
SCALES = np.exp(np.arange(math.log(0.5), math.log(2.0) + 1e-9, 0.01))  # candidate resize factors
FINE_STEPS = np.linspace(-0.006, 0.006, 7)  # log-scale offsets tried around the best coarse scale
FINE_GRID = 2 * TILE_PX  # the fine search scores shifts every TILE_PX / FINE_GRID px
ANALYSIS_WINDOW_PX = 512  # extraction reads at most this much of the middle of a frame
WEIGHT_WINDOW_PX = 256  # ... and this much to weigh frames
OVERSAMPLE = 4  # zero-padding factor of the spectrum that comb frequencies are interpolated from
HIGHPASS_SIGMA_PX = 4.0
LOCAL_RMS_SIGMA_PX = 8.0
LOCAL_RMS_FLOOR = 2.0  # levels; keeps flat areas from being amplified without bound
FLAT_LEVELS = 1.5  # RMS pattern amplitude on flat areas, in 8-bit luma levels
DETAIL_LEVELS = 2.0  # local RMS detail at which the amplitude has grown by √2
# Sync scores of unmarked clips (292 clips: shapes, photo pans, textures, noise; plain, H.264,
# resized, cropped) had median 5.1, 99th percentile 6.1 and maximum 6.4: the search over ~140
# scales × 128² shifts makes the best of many chance scores.
Z_DETECT = 7.0  # a payload is only read above this
Z_NULL_P99 = 6.0  # confidence 0 at or below this score
Z_SURE = 10.0  # confidence 1 at or above this score
MIN_DETECT_PX = 48  # smaller frames cannot hold a tile even at the smallest searched scale (0.5 × 128 px)


# -- key-derived layout ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Which frequency bins carry what; all (K,) arrays over the half-plane annulus."""

    kx: np.ndarray  # (K,) int, cycles per tile
    ky: np.ndarray  # (K,) int, ≥ 0
    ref: np.ndarray  # (K,) complex unit phasor
    bit: np.ndarray  # (K,) int: -1 for sync bins, else the coded bit the bin carries

    @property
    def sync(self) -> np.ndarray:
        return self.bit < 0


def _rng(seed: bytes) -> np.random.Generator:
    return np.random.default_rng(np.frombuffer(hashlib.sha256(seed).digest(), dtype=np.uint32))


@functools.lru_cache(maxsize=8)
def layout(key: bytes = LEGACY_KEY) -> Layout:
    """The bins of the annulus, which carry sync and which carry each coded bit, and their phases.

    Bin order and the sync bins come from the public `LEGACY_KEY` for every key, so any mark,
    ours, legacy or another installation's, is found by the same search. The data bins' bit
    assignment and phases come from `key`: without it a payload can neither be read nor forged.
    """
    rng = _rng(LEGACY_KEY)
    lo, hi = BAND_CYCLES
    n = int(hi)
    ky, kx = np.meshgrid(np.arange(0, n + 1), np.arange(-n, n + 1), indexing="ij")
    ky, kx = ky.ravel(), kx.ravel()
    radius = np.hypot(kx, ky)
    half_plane = (ky > 0) | ((ky == 0) & (kx > 0))  # one of each conjugate pair
    keep = half_plane & (radius >= lo) & (radius <= hi)
    kx, ky = kx[keep], ky[keep]
    order = rng.permutation(len(kx))
    kx, ky = kx[order], ky[order]
    bit = np.full(len(kx), -1)
    bit[SYNC_BINS:] = np.arange(len(kx) - SYNC_BINS) % CODED_BITS
    ref = np.exp(2j * np.pi * rng.random(len(kx)))
    if len(kx) - SYNC_BINS < 2 * CODED_BITS:
        raise ValueError(f"band {BAND_CYCLES} holds {len(kx)} bins; need ≥ {SYNC_BINS + 2 * CODED_BITS}")
    if key != LEGACY_KEY:  # secret data layout; sync stays public
        keyed = _rng(b"data-layout" + key)
        bit[SYNC_BINS:] = keyed.permutation(bit[SYNC_BINS:])
        ref[SYNC_BINS:] = np.exp(2j * np.pi * keyed.random(len(kx) - SYNC_BINS))
    return Layout(kx=kx, ky=ky, ref=ref, bit=bit)


# -- payload coding -------------------------------------------------------------------------------


def make_payload(model_id: str, generation_id: str) -> bytes:
    """8 bytes: blake2b(model_id)[:2] + blake2b(generation_id)[:6].

    The model part lets a detector say which model made a clip without a ledger; the
    generation part (2^48 values) keys the clip's record in the ledger (`Ledger.find_payload`).
    """
    model = hashlib.blake2b(model_id.encode(), digest_size=2).digest()
    generation = hashlib.blake2b(generation_id.encode(), digest_size=6).digest()
    return model + generation


def payload_matches(payload: bytes | None, model_id: str, generation_id: str | None = None) -> bool:
    """Whether an extracted payload belongs to `model_id` (and, if given, `generation_id`)."""
    if payload is None or len(payload) != PAYLOAD_BITS // 8:
        return False
    if generation_id is None:
        return payload[:2] == make_payload(model_id, "")[:2]
    return payload == make_payload(model_id, generation_id)


def _crc(bits: np.ndarray) -> np.ndarray:
    """Legacy check: bits(x) · x^CRC_BITS mod g(x) over GF(2), XOR a constant. (N,) -> (CRC_BITS,)"""
    poly = np.array([1] + [(CRC_POLY >> (CRC_BITS - 1 - i)) & 1 for i in range(CRC_BITS)], dtype=np.uint8)
    reg = np.concatenate([bits.astype(np.uint8), np.zeros(CRC_BITS, np.uint8)])
    for i in range(len(bits)):
        if reg[i]:
            reg[i : i + CRC_BITS + 1] ^= poly
    xor_out = np.frombuffer(hashlib.sha256(LEGACY_KEY + b"crc").digest()[:CRC_BITS], np.uint8) & 1
    return reg[-CRC_BITS:] ^ xor_out


def _check(bits: np.ndarray, key: bytes) -> np.ndarray:
    """The payload's CRC_BITS check bits: a keyed tag (HMAC-SHA256) for a secret key, the CRC for legacy.

    (PAYLOAD_BITS,) -> (CRC_BITS,). A wrong read, or a forgery without the key, passes with probability 2^-24.
    """
    if key == LEGACY_KEY:
        return _crc(bits)
    tag = hmac.new(key, b"payload" + np.packbits(bits).tobytes(), hashlib.sha256).digest()
    return np.unpackbits(np.frombuffer(tag, np.uint8))[:CRC_BITS]


@functools.lru_cache(maxsize=1)
def _trellis() -> tuple[np.ndarray, np.ndarray]:
    """For each next state and each of its two predecessors: (previous state, output bits).

    State = the last K-1 inputs, newest in the top bit; register = input << (K-1) | state.
    Returns prev (2^(K-1), 2) int and out (2^(K-1), 2, 2) uint8.
    """
    n_states = 2 ** (CONV_K - 1)
    nxt = np.arange(n_states)[:, None]  # (N, 1)
    prev = ((nxt << 1) & (n_states - 1)) | np.arange(2)  # (N, 2) the dropped oldest bit is 0 or 1
    register = ((nxt >> (CONV_K - 2)) << (CONV_K - 1)) | prev  # (N, 2) input bit is the new state's top bit
    parity = np.vectorize(lambda v: bin(v).count("1") & 1)
    out = np.stack([parity(register & g) for g in CONV_POLYS], -1).astype(np.uint8)  # (N, 2, 2)
    return prev, out


def _conv_encode(bits: np.ndarray) -> np.ndarray:
    """Rate-1/2 convolutional code, terminated with K-1 zeros. (N,) -> (2 (N + K - 1),)"""
    state, out = 0, []
    for b in np.concatenate([bits, np.zeros(CONV_K - 1, np.uint8)]):
        register = (int(b) << (CONV_K - 1)) | state
        out += [bin(register & g).count("1") & 1 for g in CONV_POLYS]
        state = register >> 1
    return np.array(out, np.uint8)


def _viterbi(soft: np.ndarray) -> np.ndarray:
    """Soft-decision Viterbi decoding of `_conv_encode`; soft (2 M,), positive meaning 0 -> (M - K + 1,) bits."""
    prev, out = _trellis()
    sign = 1.0 - 2.0 * out  # (N, 2, 2) +1 where the branch emits a 0
    steps = soft.reshape(-1, 2)  # (M, 2)
    metric = np.full(len(prev), -np.inf)
    metric[0] = 0.0
    choices = np.empty((len(steps), len(prev)), np.int8)  # (M, N) which predecessor won
    for t, pair in enumerate(steps):
        candidates = metric[prev] + sign @ pair  # (N, 2)
        choices[t] = np.argmax(candidates, 1)
        metric = candidates[np.arange(len(prev)), choices[t]]
    state, bits = 0, np.empty(len(steps), np.uint8)  # terminated: the path ends in state 0
    for t in range(len(steps) - 1, -1, -1):
        bits[t] = state >> (CONV_K - 2)
        state = prev[state, choices[t, state]]
    return bits[: len(steps) - CONV_K + 1]


def encode_bits(payload: bytes, key: bytes) -> np.ndarray:
    """8 payload bytes -> (CODED_BITS,) uint8: the convolutional code of payload bits + keyed check."""
    if len(payload) != PAYLOAD_BITS // 8:
        raise ValueError(f"payload must be {PAYLOAD_BITS // 8} bytes, got {len(payload)}; build it with make_payload()")
    bits = np.unpackbits(np.frombuffer(payload, np.uint8))  # (64,)
    return _conv_encode(np.concatenate([bits, _check(bits, key)]))


def decode_bits(soft: np.ndarray, key: bytes) -> bytes | None:
    """Soft coded bits (CODED_BITS,), positive meaning 0 -> payload bytes, or None when the check fails."""
    bits = _viterbi(soft)  # (PAYLOAD_BITS + CRC_BITS,)
    payload, check = bits[:PAYLOAD_BITS], bits[PAYLOAD_BITS:]
    if not np.array_equal(_check(payload, key), check):
        return None
    return np.packbits(payload).tobytes()


# -- blur -----------------------------------------------------------------------------------------


def _fft_size(n: int) -> int:
    """The smallest 2^a·3^b·5^c ≥ n: a length numpy's FFT handles fast."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


@functools.lru_cache(maxsize=32)
def _gaussian_spectrum(sigma: float, n: int) -> tuple[np.ndarray, int, int]:
    """For blurring n samples: the rfft of a normalised Gaussian kernel of radius round(4σ) zero-padded
    to a fast FFT length ≥ n + 2·radius, the radius, and that length."""
    radius = int(4.0 * sigma + 0.5)
    size = _fft_size(n + 2 * radius)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    padded = np.zeros(size)
    padded[: 2 * radius + 1] = kernel / kernel.sum()
    return np.fft.rfft(padded), radius, size


def _blur_axis(a: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """1-D Gaussian blur of float64 `a` along `axis`: circular convolution of the mirrored-edge signal,
    long enough that no output sample wraps around."""
    n = a.shape[axis]
    spectrum, radius, size = _gaussian_spectrum(sigma, n)
    pad = [(0, 0)] * a.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(a, pad, mode="symmetric")  # edges mirrored, edge sample repeated
    shape = [1] * a.ndim
    shape[axis] = -1
    out = np.fft.irfft(np.fft.rfft(padded, size, axis=axis) * spectrum.reshape(shape), size, axis=axis)
    keep = [slice(None)] * a.ndim
    keep[axis] = slice(2 * radius, 2 * radius + n)
    return out[tuple(keep)]


def gaussian_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of (..., H, W) over its last two axes, same shape and dtype.

    The filter of `scipy.ndimage.gaussian_filter(a, (0, …, σ, σ))` (kernel truncated at 4σ, edges
    mirrored with the edge pixel repeated), computed through numpy's FFT in float64 (rounded to `a`'s dtype
    after each axis, as SciPy does): it agrees with SciPy to ~1e-12 of the input's range, and takes about
    as long at any σ. Unlike a direct sum, an FFT leaves ~1e-13 noise where the input is flat, which may be
    negative for a non-negative input: clip before a square root.
    """
    rows = _blur_axis(a.astype(np.float64), sigma, a.ndim - 2).astype(a.dtype)  # rounded between passes, as SciPy does
    return _blur_axis(rows.astype(np.float64), sigma, a.ndim - 1).astype(a.dtype)


# -- embedding ------------------------------------------------------------------------------------


def luma(frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> float32 (T, H, W), BT.601 weights."""
    rgb = frames.astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def tile_pattern(bits: np.ndarray, key: bytes) -> np.ndarray:
    """Coded bits (CODED_BITS,) -> the (TILE_PX, TILE_PX) pattern with unit RMS."""
    lay = layout(key)
    sign = np.where(lay.sync, 1.0, 1.0 - 2.0 * bits[np.maximum(lay.bit, 0)])  # (K,)
    spectrum = np.zeros((TILE_PX, TILE_PX), np.complex128)
    spectrum[lay.ky % TILE_PX, lay.kx % TILE_PX] = lay.ref * sign
    spectrum[-lay.ky % TILE_PX, -lay.kx % TILE_PX] = np.conj(lay.ref * sign)
    tile = np.fft.ifft2(spectrum).real  # (TILE_PX, TILE_PX)
    return tile / tile.std()


def _amplitude(y: np.ndarray, strength: float) -> np.ndarray:
    """Pattern amplitude in luma levels per pixel, (T, H, W) -> (T, H, W) ≥ 0.

    `FLAT_LEVELS` where the frame is flat, growing with the square root of local detail
    (texture hides the pattern), at most 2 × strength, and fading to zero where a pixel would
    clip at 0 or 255.
    """
    detail = y - gaussian_blur(y, 1.5)
    activity = np.sqrt(np.maximum(gaussian_blur(detail**2, 4.0), 0))  # local RMS detail, in levels
    amplitude = np.minimum(FLAT_LEVELS * np.sqrt(1 + activity / DETAIL_LEVELS), 2 * strength)
    headroom = np.minimum(y, 255 - y) / (2 * amplitude + 1e-6)
    return amplitude * np.clip(headroom, 0, 1)


def embed(frames: np.ndarray, payload: bytes, key: bytes, strength: float = DEFAULT_STRENGTH) -> np.ndarray:
    """Hide 8 payload bytes in uint8 frames (T, H, W, 3) under `key`; returns marked frames of the same shape.

    `key` is an installation's watermark key (`InstallationKey.derive("watermark")`); new outputs
    never use `LEGACY_KEY`, which anyone can read.

    `strength` caps the RMS luma change, in 8-bit levels: PSNR ≥ 20 log10(255 / strength) dB
    (39 dB at the default; flat clips get less change and a higher PSNR).
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if min(h, w) < TILE_PX:
        raise ValueError(f"frames of {w}×{h} are too small; the watermark needs ≥ {TILE_PX} px per side")
    tile = tile_pattern(encode_bits(payload, key), key)  # (TILE_PX, TILE_PX)
    pattern = np.tile(tile, (-(-h // TILE_PX), -(-w // TILE_PX)))[:h, :w]  # (H, W)
    delta = _amplitude(luma(frames), strength) * pattern  # (T, H, W)
    rms = float(np.sqrt(np.mean(delta**2)))
    if rms > strength:  # a budget, not a target: flat clips get less
        delta *= strength / rms
    marked = frames.astype(np.float32) + delta[..., None]  # (T, H, W, 3)
    return np.clip(np.rint(marked), 0, 255).astype(np.uint8)


# -- extraction -----------------------------------------------------------------------------------


def _residuals(frames: np.ndarray) -> np.ndarray:
    """High-passed luma divided by its local RMS, (T, H, W) float32.

    The high-pass drops the content's bulk; the local normalisation weights each region by how
    well it can show the pattern (the pattern is at most ~2× stronger in texture, the content
    noise there is far more).
    """
    y = luma(frames)  # (T, H, W)
    r = y - gaussian_blur(y, HIGHPASS_SIGMA_PX)
    local = np.sqrt(np.maximum(gaussian_blur(r**2, LOCAL_RMS_SIGMA_PX), 0))  # local RMS, levels
    return r / (local + LOCAL_RMS_FLOOR)  # busy regions would otherwise drown the quiet ones


def _spectrum(residual: np.ndarray, oversample: int) -> tuple[np.ndarray, tuple[int, int]]:
    """DTFT of residuals sampled every 1/(oversample·size) cycles/px, origin at the frame centre.

    (..., H, W) -> (..., oversample·W, oversample·H // 2 + 1) complex: axis -2 is fx (all signs),
    axis -1 is fy ≥ 0. Centring the origin makes the spectrum smooth enough to interpolate.
    """
    h, w = residual.shape[-2:]
    padded = np.zeros((*residual.shape[:-2], oversample * w, oversample * h), np.float32)  # fy on the half axis
    padded[..., :w, :h] = np.swapaxes(residual, -1, -2)
    centre = (h // 2, w // 2)
    padded = np.roll(padded, (-centre[1], -centre[0]), axis=(-2, -1))
    return np.fft.rfft2(padded), centre


def _comb(spectrum: np.ndarray, centre: tuple[int, int], scales: np.ndarray, mirrored: bool = False) -> np.ndarray:
    """The spectrum at every layout bin for each scale, as unit phasors; (..., S) scales -> (..., S, K).

    Bins are interpolated bilinearly between spectrum samples. Phases are referred to the
    frame's top-left pixel, so a tile offset of d px multiplies bin k by exp(2πi k·d / TILE_PX).
    `mirrored` reads the bins of a horizontally flipped pattern: x -> -x negates kx, and the
    flip's offset is a shift like any other.
    """
    lay = layout()
    nx, ny = spectrum.shape[-2], (spectrum.shape[-1] - 1) * 2
    period = TILE_PX * scales[:, None]  # (S, 1) tile period in pixels of these frames
    fy, fx = lay.ky / period, (-lay.kx if mirrored else lay.kx) / period  # (S, K) cycles/px
    iy, ix = fy * ny, (fx * nx) % nx  # (S, K) fractional sample indices
    y0, x0 = np.floor(iy).astype(int), np.floor(ix).astype(int)
    ay, ax = iy - y0, ix - x0
    x1 = (x0 + 1) % nx
    bins = (
        (1 - ax) * (1 - ay) * spectrum[..., x0, y0]
        + ax * (1 - ay) * spectrum[..., x1, y0]
        + (1 - ax) * ay * spectrum[..., x0, y0 + 1]
        + ax * ay * spectrum[..., x1, y0 + 1]
    )  # (..., S, K)
    bins = bins * np.exp(-2j * np.pi * (fy * centre[0] + fx * centre[1]))  # origin back to the top-left
    return bins / np.maximum(np.abs(bins), 1e-12)


def _sync_scores(phasors: np.ndarray, grid: int) -> np.ndarray:
    """Sync z-score for every shift; (S, K) -> (S, grid, grid), shifts in steps of TILE_PX / grid px."""
    lay = layout()  # sync bins are the same under every key
    spectrum = np.zeros((len(phasors), grid, grid), np.complex64)
    spectrum[:, lay.ky[lay.sync] % grid, lay.kx[lay.sync] % grid] = phasors[:, lay.sync] * np.conj(lay.ref[lay.sync])
    return np.fft.fft2(spectrum).real / math.sqrt(lay.sync.sum() / 2)


@dataclass
class Detection:
    """Everything `detect` found; `payload` is None unless sync and a key's check both passed."""

    payload: bytes | None
    confidence: float  # sync score mapped to [0, 1]: 0 up to Z_NULL_P99, 1 from Z_SURE
    sync_z: float
    scale: float  # size of these frames relative to the marked ones
    shift_px: tuple[float, float]  # (dy, dx): the tile position at these frames' top-left pixel, in marked px
    aligned: np.ndarray  # (K,) the bins' phasors at the found scale, with the found shift undone
    mirrored: bool = False  # found in the horizontally flipped frames
    key: bytes | None = None  # the key whose check the payload passed

    def soft_bits(self, key: bytes) -> np.ndarray:
        """(CODED_BITS,) z-scores of the coded bits under `key`, positive meaning 0."""
        lay = layout(key)
        data = ~lay.sync
        agreement = (self.aligned * np.conj(lay.ref)).real  # (K,)
        per_bit = np.bincount(lay.bit[data], minlength=CODED_BITS)
        return np.bincount(lay.bit[data], weights=agreement[data], minlength=CODED_BITS) / np.sqrt(per_bit / 2)

    @property
    def sync_found(self) -> bool:
        return self.sync_z >= Z_DETECT


def _derotate(shift: np.ndarray) -> np.ndarray:
    """Undo a tile offset of `shift` (dy, dx) px: (K,) phasors."""
    lay = layout()
    return np.exp(-2j * np.pi * (lay.ky * shift[0] + lay.kx * shift[1]) / TILE_PX)


def _locate(residual: np.ndarray, scales: np.ndarray, mirrored: tuple[bool, ...] = (False,)) -> Detection:
    """Best scale, shift (and flip, of those in `mirrored`) of the sync pattern in one residual image (H, W)."""
    spectrum, centre = _spectrum(residual, OVERSAMPLE)
    # 1. coarse: every scale, every shift, each orientation asked for
    best = None
    for flip in mirrored:
        z = _sync_scores(_comb(spectrum, centre, scales, flip), TILE_PX)  # (S, TILE_PX, TILE_PX) 1 px steps
        if best is None or z.max() > best[0]:
            best = (float(z.max()), scales[np.unravel_index(np.argmax(z), z.shape)[0]], flip)
    _, scale, flip = best
    # 2. fine: a few scales around the best one
    fine = scale * np.exp(FINE_STEPS)
    phasors = _comb(spectrum, centre, fine, flip)  # (F, K)
    z = _sync_scores(phasors, FINE_GRID)  # (F, G, G)
    f, gy, gx = np.unravel_index(np.argmax(z), z.shape)
    shift = np.array([gy, gx]) * TILE_PX / FINE_GRID  # (2,) px
    sync_z = float(z[f, gy, gx])
    confidence = float(np.clip((sync_z - Z_NULL_P99) / (Z_SURE - Z_NULL_P99), 0.0, 1.0))
    aligned = phasors[f] * _derotate(shift)  # (K,)
    return Detection(None, confidence, sync_z, float(fine[f]), (float(shift[0]), float(shift[1])), aligned, flip)


def _centre_window(h: int, w: int, size_px: int) -> tuple[slice, slice]:
    """Rows and columns of the middle (at most) size_px × size_px of an h × w frame."""
    top, left = max(0, (h - size_px) // 2), max(0, (w - size_px) // 2)
    return slice(top, top + min(h, size_px)), slice(left, left + min(w, size_px))


def _frame_weights(residuals: np.ndarray, found: Detection) -> np.ndarray:
    """How strongly each frame shows the sync pattern where `found` put it; (T, H, W) -> (T,) ≥ 0.

    After H.264 the pattern is strongest in intra-coded frames; weighting by it beats a plain mean.
    A central crop and coarser spectrum sampling are enough for a weight.
    """
    lay = layout()
    rows, cols = _centre_window(*residuals.shape[1:], WEIGHT_WINDOW_PX)
    spectra, centre = _spectrum(residuals[:, rows, cols], 2)
    phasors = _comb(spectra, centre, np.array([found.scale]), found.mirrored)[:, 0, lay.sync]  # (T, sync K)
    dx = -cols.start if found.mirrored else cols.start  # in flipped coordinates x runs the other way
    shift = np.array(found.shift_px) + np.array([rows.start, dx]) / found.scale  # crop moves the origin
    agreement = (phasors * np.conj(lay.ref[lay.sync]) * _derotate(shift)[lay.sync]).real  # (T, sync K)
    return np.maximum(agreement.mean(1), 0.0)  # (T,)


def _nothing() -> Detection:
    """The detection of frames too small to hold a mark."""
    return Detection(None, 0.0, 0.0, 1.0, (0.0, 0.0), np.zeros(len(layout().kx), np.complex128))


def detect(frames: np.ndarray, keys: Sequence[bytes] = (LEGACY_KEY,)) -> Detection:
    """Search scale, shift and flip for the sync pattern, then read the payload there with each of `keys`.

    The first key whose check passes is returned in `Detection.key`. A found sync with no key
    passing means a mark made under a key not given here (or one damaged beyond reading).
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if min(frames.shape[1:3]) < MIN_DETECT_PX:
        return _nothing()
    rows, cols = _centre_window(*frames.shape[1:3], ANALYSIS_WINDOW_PX)  # tiled: the middle holds all of it
    residuals = _residuals(frames[:, rows, cols])  # (T, H, W)
    # 1. find the pattern in the mean over frames; the flipped pattern only when the plain one is absent
    found = _locate(residuals.mean(0), SCALES)
    if not found.sync_found:
        found = _locate(residuals.mean(0), SCALES, (False, True))
    candidates = [found]
    # 2. if found, re-read with frames weighted by how much of the pattern each one kept
    if found.sync_found and len(residuals) > 1:
        weights = _frame_weights(residuals, found)  # (T,)
        if weights.sum() > 0:
            weighted = np.tensordot(weights / weights.sum(), residuals, axes=1)  # (H, W)
            candidates.insert(0, _locate(weighted, found.scale * np.exp(FINE_STEPS), (found.mirrored,)))
    # 3. the first candidate and key whose check passes wins
    best = max(candidates, key=lambda c: c.sync_z)
    for c in candidates:
        for key in keys if c.sync_found else ():
            if (payload := decode_bits(c.soft_bits(key), key)) is not None:
                best, best.payload, best.key = c, payload, key
                break
        if best.payload is not None:
            break
    offset = np.array([rows.start, -cols.start if best.mirrored else cols.start]) / best.scale  # window -> frame origin
    best.shift_px = tuple(float(v) for v in (np.array(best.shift_px) - offset) % TILE_PX)
    return best


def extract(frames: np.ndarray, keys: Sequence[bytes] = (LEGACY_KEY,)) -> tuple[bytes | None, float]:
    """Decoded payload (None when no mark is read with `keys`) and detection confidence in [0, 1].

    A high confidence with a None payload means the sync pattern is there but no key's check
    passed: another installation's mark, or one compressed too heavily to read.
    """
    found = detect(frames, keys)
    return found.payload, found.confidence
