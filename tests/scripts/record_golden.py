"""Record the frames the bundled model makes for a few prompts and seeds (tests/data/golden_frames.npz).

Run once before a refactor of the generation path; `tests/test_golden.py` then checks that
the same frames still come out (before the watermark).

    python tests/scripts/record_golden.py
"""

from pathlib import Path

import numpy as np

CASES = [
    ("a red circle moving left on a black background", 0),
    ("a yellow triangle spinning on a navy background", 7),
    ("a blue square moving up on a gray background", 123),
]
SETTINGS = dict(num_inference_steps=4, guidance_scale=4.0, width=128, height=128, duration_s=1.0)
OUT = Path(__file__).resolve().parents[1] / "data" / "golden_frames.npz"


def generate() -> list[np.ndarray]:
    """The frames before the watermark: latents from the pipeline, decoded by its own (private) decode step."""
    from tessera.pipeline import TesseraPipeline

    pipe = TesseraPipeline.from_single_file(device="cpu")
    outs = [pipe(p, seed=s, output_type="latent", **SETTINGS) for p, s in CASES]
    return [pipe._decode(o.latents[None])[0] for o in outs]


if __name__ == "__main__":
    frames = generate()
    np.savez_compressed(OUT, *frames)
    print(f"wrote {OUT}: {[f.shape for f in frames]}")
