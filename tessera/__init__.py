"""Tessera: text-to-video with a causal video VAE and a diffusion transformer over spacetime patches."""

__version__ = "0.1.0"
