"""Real-video preparation: `tessera prepare SRC --out DATASET`.

    sources.py    the videos SRC names, and their titles
    probe.py      stage 1: what a video is; frames decoded from it
    shots.py      stage 2: shots -> clips within [min, max] seconds
    filters.py    stage 3: measured quality values against thresholds
    recaption.py  stage 4: long captions from titles and measured facts
    encode.py     stage 5: frames at a training shape -> VAE latents; the valid sizes
    record.py     ClipRecord: one clip through the stages, one manifest line
    prepare.py    the run: journals, a process pool, shards, manifest and summary

Each stage is a plain function of one item (a source path or a ClipRecord, plus settings)
returning a plain dict, so it runs the same in a local pool or as a remote task. This
package imports models and checkpoints, never training, the pipeline or the shapes world.
"""
