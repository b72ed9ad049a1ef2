"""A perceptual video hash: the fallback that traces a file to its ledger record when the mark is gone.

`video_hash` survives re-encoding and resizing; `Ledger.nearest` (tessera.safety.ledger) finds
the closest record by it. A fallback must never name a generation for a clip that has too little
structure to tell apart: a flat, near-flat or single-ramp frame hashes to (nearly) all zeros, the
same as every other such frame. So a query needs `structure_levels` ≥ `MIN_STRUCTURE_LEVELS` and
a record's hash needs `MIN_STRUCTURE_BITS` set outside the first DCT row and column (a plane's
DCT lives only there) before they are compared.
"""

from __future__ import annotations

import functools

import numpy as np

from tessera.safety.watermark import luma

HASH_FRAMES = 4  # frames sampled evenly over the clip
HASH_GRID_PX = 32  # each sampled frame is area-averaged to HASH_GRID_PX × HASH_GRID_PX luma
HASH_DCT = 8  # the HASH_DCT × HASH_DCT lowest DCT frequencies, less DC, give HASH_DCT² - 1 bits per frame
HASH_DEADZONE = 0.05  # a coefficient counts as positive above this fraction of the RMS coefficient
MATCH_DISTANCE = 0.08  # a fallback match must be this close: 90% of H.264 CRF 35 re-encodes of generated clips score < 0.07 and resizes < 0.01, while an unmarked shapes-world clip came within 0.091 of a generation (benchmarks/safety_watermark.py) and distinct generations are > 0.17 apart
MIN_STRUCTURE_LEVELS = 2.0  # luma RMS, in 8-bit levels, left on the hash grid after removing the best plane
MIN_STRUCTURE_BITS = 12  # bits a hash must set outside the first DCT row and column, over all its frames


# -- perceptual hash ------------------------------------------------------------------------------


def _area_average(image: np.ndarray, size: int) -> np.ndarray:
    """Mean over a size × size grid of near-equal cells; (H, W) -> (size, size)."""
    h, w = image.shape
    if h < size or w < size:
        raise ValueError(f"frames of {w}×{h} are smaller than the {size}×{size} hash grid")
    row_edges = np.linspace(0, h, size + 1).astype(int)  # (size + 1,)
    col_edges = np.linspace(0, w, size + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(image, row_edges[:-1], axis=0), col_edges[:-1], axis=1)  # (size, size)
    return sums / np.outer(np.diff(row_edges), np.diff(col_edges))


def _picks(t: int) -> np.ndarray:
    """Indices of the HASH_FRAMES frames sampled at fixed fractions of a clip of t frames."""
    return np.round((np.arange(HASH_FRAMES) + 0.5) / HASH_FRAMES * t - 0.5).astype(int).clip(0, t - 1)


@functools.cache
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II as an (n, n) matrix: `m @ x` is `scipy.fft.dct(x, norm="ortho")` (no SciPy import)."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    m = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    m[0] /= np.sqrt(2.0)
    return m


def _frame_bits(y: np.ndarray) -> np.ndarray:
    """One frame's luma (H, W) -> (HASH_DCT² - 1,) bits: which low DCT frequencies are clearly positive.

    "Clearly" means above HASH_DEADZONE × their RMS: symmetric content has many coefficients near
    zero, and comparing those with zero (or a median) would flip bits under compression noise.
    """
    low = _dct_matrix(HASH_GRID_PX)[:HASH_DCT]  # (HASH_DCT, HASH_GRID_PX): the lowest frequencies only
    coeffs = (low @ _area_average(y, HASH_GRID_PX) @ low.T).ravel()[1:]  # 2-D DCT, DC dropped
    return (coeffs > HASH_DEADZONE * np.sqrt(np.mean(coeffs**2))).astype(np.uint8)


def video_hash(frames: np.ndarray) -> str:
    """Perceptual hash of uint8 frames (T, H, W, 3) as hex: HASH_FRAMES × 63 bits.

    Frames are sampled at the same fractions of the clip's length, so a re-encode (or a change of
    size) hashes the same moments; each is reduced to coarse luma, so compression noise and
    resampling barely move it.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be (T, H, W, 3) with T ≥ 1, got {frames.shape}")
    bits = np.concatenate([_frame_bits(luma(frames[i : i + 1])[0]) for i in _picks(len(frames))])  # (HASH_FRAMES · 63,)
    return np.packbits(bits).tobytes().hex()


def hash_distance(a: str, b: str) -> float:
    """Fraction of differing bits between two `video_hash` values, in [0, 1]."""
    if len(a) != len(b):
        raise ValueError(f"hashes differ in length ({len(a)} vs {len(b)} hex digits); both must come from video_hash")
    n_bits = HASH_FRAMES * (HASH_DCT**2 - 1)
    x = np.unpackbits(np.frombuffer(bytes.fromhex(a), np.uint8))[:n_bits]
    y = np.unpackbits(np.frombuffer(bytes.fromhex(b), np.uint8))[:n_bits]
    return float(np.mean(x != y))


# -- structure: which hashes may be compared at all ----------------------------------------------


def structure_levels(frames: np.ndarray) -> float:
    """How much a clip's hash grid varies beyond a plane; uint8 (T, H, W, 3) -> luma RMS in levels.

    The median over the sampled frames of the RMS left on the HASH_GRID_PX² grid after removing
    its least-squares plane a + b·x + c·y: 0 for flat colours and linear ramps, ~0 for near-flat
    clips, and 0 for frames smaller than the grid (they cannot be hashed).
    """
    h, w = frames.shape[1:3]
    if h < HASH_GRID_PX or w < HASH_GRID_PX:
        return 0.0
    yy, xx = np.mgrid[:HASH_GRID_PX, :HASH_GRID_PX]
    design = np.stack([np.ones(HASH_GRID_PX**2), yy.ravel(), xx.ravel()], 1)  # (G², 3)
    rms = []
    for i in _picks(len(frames)):
        grid = _area_average(luma(frames[i : i + 1])[0], HASH_GRID_PX).ravel()  # (G²,)
        fit, *_ = np.linalg.lstsq(design, grid, rcond=None)
        rms.append(float(np.sqrt(np.mean((grid - design @ fit) ** 2))))
    return float(np.median(rms))


def structure_bits(hash_hex: str) -> int:
    """Bits a `video_hash` sets outside the first row and column of each frame's DCT block."""
    n = HASH_DCT**2 - 1
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(hash_hex), np.uint8))[: HASH_FRAMES * n]
    block = np.concatenate([np.zeros((HASH_FRAMES, 1), np.uint8), bits.reshape(HASH_FRAMES, n)], 1)  # DC back in
    block = block.reshape(HASH_FRAMES, HASH_DCT, HASH_DCT)  # (F, u, v)
    return int(block[:, 1:, 1:].sum())


def fallback_refusal(frames: np.ndarray) -> str | None:
    """Why these frames (T, H, W, 3) must not be matched by hash, or None when they may be."""
    h, w = frames.shape[1:3]
    if h < HASH_GRID_PX or w < HASH_GRID_PX:
        return f"frames of {w}×{h} px are smaller than the {HASH_GRID_PX}×{HASH_GRID_PX} hash grid"
    level = structure_levels(frames)
    if level < MIN_STRUCTURE_LEVELS:
        return f"too little structure to match by hash ({level:.1f} levels beyond a plane; need {MIN_STRUCTURE_LEVELS})"
    if structure_bits(video_hash(frames)) < MIN_STRUCTURE_BITS:
        return f"hash too plain to match (fewer than {MIN_STRUCTURE_BITS} bits beyond the first DCT row and column)"
    return None
