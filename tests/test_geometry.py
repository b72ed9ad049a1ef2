"""One geometry from the components: valid sizes, frame counts and token counts follow the VAE and the DiT."""

import pytest

from tessera.errors import InputError
from tessera.geometry import Geometry


def geo(s=16, tf=4, pt=1, ph=2, output=True):
    return Geometry(s, tf, 16, patch_t=pt, patch_hw=ph, **({"min_side_px": 128, "max_side_px": 2048} if output else {}))


def test_bundled_shapes():
    g = geo()
    assert (g.unit_px, g.frame_step) == (32, 4)
    assert g.frames_for(2.0, 8) == 17 and g.frames_for(0.01, 8) == 5
    assert g.latent_shape(17, 256, 448) == (16, 5, 16, 28)
    assert g.tokens(17, 256, 256) == 320


@pytest.mark.parametrize(
    "w,h,hint", [(250, 256, "try 256"), (0, 256, "try 128"), (4096, 256, "try 2048"), (96, 256, "try 128")]
)
def test_bad_sides_name_the_nearest_valid_one(w, h, hint):
    with pytest.raises(InputError, match=hint):
        geo().check_size(w, h)


def test_a_time_patch_makes_even_latent_lengths():
    g = geo(pt=2)
    for d in (0.5, 1.0, 2.0, 3.3):
        frames = g.frames_for(d, 8)
        g.check_frames(frames)
        assert g.latent_shape(frames, 256, 256)[1] % 2 == 0
    with pytest.raises(InputError, match="multiple of 2"):
        g.check_frames(17)  # 5 latent frames cannot be cut into patches of 2
    g.check_frames(13)  # 4 latent frames


def test_other_vaes_and_patches():
    g = geo(s=8, ph=4)
    assert g.unit_px == 32 and g.latent_shape(17, 256, 256)[2:] == (32, 32) and g.tokens(17, 256, 256) == 320
    vae_only = geo(s=8, ph=1, output=False)
    vae_only.check_size(48, 80)
    with pytest.raises(InputError):
        vae_only.check_size(50, 80)
