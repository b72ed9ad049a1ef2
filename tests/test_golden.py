"""The bundled model's frames for fixed prompts and seeds do not change when the code is reshaped.

tests/data/golden_frames.npz was written by tests/scripts/record_golden.py before the
generation path was refactored; the frames (before the watermark) must come out the same,
up to 1/255 for bf16 rounding on another CPU.
"""

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).parent / "scripts" / "record_golden.py"


def test_bundled_model_makes_the_recorded_frames():
    spec = importlib.util.spec_from_file_location("record_golden", SCRIPT)
    golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden)
    expected = np.load(golden.OUT)
    frames = golden.generate()
    assert len(frames) == len(expected.files) == 3
    for i, got in enumerate(frames):
        want = expected[f"arr_{i}"]
        assert got.shape == want.shape and got.dtype == np.uint8
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, f"case {i} changed"
