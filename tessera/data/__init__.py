"""Training data, in two sub-packages that do not import each other.

    world/    the shapes world: procedural clips, their captions, VAE batches, the latent cache
    ingest/   real videos: sources, probe, shots, quality filters, recaptioning, `tessera prepare`

Both write the same latent shards (`shards.py`), which the trainer groups by shape and
samples in buckets (`buckets.py`). Data modules import models and checkpoints, never
training or the pipeline.
"""
