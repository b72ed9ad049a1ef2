"""`tessera prepare` never destroys or hides what it was given; its layers point one way; sizes come from the model."""

import ast
import copy
import json
import pickle
from pathlib import Path

import pytest
import torch
from fixtures.videos import write_bad_file, write_world_videos

from tessera import checkpoint
from tessera.cli import main
from tessera.config import PRESETS, VAEConfig, to_dict
from tessera.data.ingest import prepare as prepare_module
from tessera.data.ingest.encode import copy_vae, geometry_of, load_vae
from tessera.data.ingest.prepare import PrepareConfig, check_config, clip_file, prepare, read_manifest
from tessera.data.ingest.record import ClipRecord
from tessera.data.ingest.sources import list_sources
from tessera.models.autoencoder import load_video_vae
from tessera.models.vae import VideoVAE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_videos(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("two")
    write_world_videos(src, 2, seed=21, height_px=64, width_px=64)
    return src


def _small_cfg(ckpt: Path, **kw) -> PrepareConfig:
    return PrepareConfig(checkpoint=str(ckpt), shapes=("64x64",), frames=9, **kw)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- prepare deletes only its own files


def test_files_of_the_user_in_out_survive_and_only_our_own_temporaries_are_removed(
    two_videos, tiny_checkpoint, tmp_path
):
    out = tmp_path / "ds"
    mine = {
        "notes.tmp": b"my notes",
        "latents/mine.tmp": b"a",
        "latents/shard_notes.tmp": b"b",
        "work/keep.tmp": b"c",
        "work/latents/readme.tmp": b"d",
        "work/latents/shard_00000.safetensors.tmp": b"e",  # our shard name, but not in the folder we write shards
        "photos/holiday.mp4.tmp": b"f",
    }
    stale = [  # what a killed run of ours leaves: our names, our folders
        "manifest.jsonl.tmp",
        "latents/shard_00000.safetensors.tmp",
        f"work/latents/{clip_file('x')}.tmp",
    ]
    for name, data in mine.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    for name in stale:
        (out / name).write_bytes(b"half-written")

    prepare(two_videos, out, _small_cfg(tiny_checkpoint), progress=False)

    after = _tree(out)
    assert {k: after.get(k) for k in mine} == mine, "a file of the user was changed or deleted"
    assert not any((out / name).exists() for name in stale)
    assert any(r["status"] == "kept" for r in read_manifest(out / "manifest.jsonl"))
    assert {p.name for p in (out / "work" / "latents").iterdir()} == {"readme.tmp", "shard_00000.safetensors.tmp"}


# ----------------------------------------------------------------------------- nothing given is silently skipped


def test_symlink_loops_folders_named_like_videos_and_broken_links_get_a_rejection_record(two_videos, tmp_path):
    src = tmp_path / "crawl"
    good = write_world_videos(src, 1, seed=4, height_px=64, width_px=64)[0]
    (src / "loop.mp4").symlink_to("loop.mp4")  # a link to itself
    (src / "sub").mkdir()
    (src / "sub" / "up").symlink_to("..")  # a link to a folder above it
    inner = write_world_videos(src / "folder.mp4", 1, seed=5, height_px=64, width_px=64)[0]
    (src / "broken.mov").symlink_to(src / "gone.mov")
    (src / "again").symlink_to(src / "folder.mp4")  # a second way to the same videos: listed once, no record

    prepare(src, tmp_path / "ds", PrepareConfig(encode=False), progress=False)

    by_source = {}
    for r in read_manifest(tmp_path / "ds" / "manifest.jsonl"):
        by_source.setdefault(r["source"], []).append(r)
    expected = {
        src / "loop.mp4": "symlink_loop",
        src / "sub" / "up": "symlink_loop",
        src / "folder.mp4": "not_a_file",
        src / "broken.mov": "broken_link",
    }
    for path, reason in expected.items():
        (r,) = by_source.pop(str(path))
        assert r["status"] == "rejected" and r["reasons"] == [reason] and r["detail"], r
    assert set(by_source) == {str(good.resolve()), str(inner.resolve())}, "each real video once, nothing else"
    assert all("filters" in r for rs in by_source.values() for r in rs)


def test_a_list_file_naming_a_loop_or_a_folder_lists_them_for_the_probe(tmp_path):
    (tmp_path / "loop.mp4").symlink_to("loop.mp4")
    (tmp_path / "folder.mkv").mkdir()
    listing = tmp_path / "list.txt"
    listing.write_text("loop.mp4\nfolder.mkv\nmissing.webm\n")
    assert list_sources(listing) == sorted(tmp_path / n for n in ("folder.mkv", "loop.mp4", "missing.webm"))


# ----------------------------------------------------------------------------- no tracebacks


def test_bad_files_are_records_and_a_bad_out_folder_is_one_line_with_exit_2(tmp_path, capsys):
    src = tmp_path / "crawl"
    good = write_world_videos(src, 1, seed=8, height_px=64, width_px=64)[0]
    for kind, name in (("random_bytes", "noise.mp4"), ("truncated", "cut.mov"), ("text", "notes.avi")):
        write_bad_file(src / name, kind, good)
    (src / "loop.webm").symlink_to("loop.webm")
    (src / "dir.mkv").mkdir()
    assert main(["prepare", str(src), "--out", str(tmp_path / "ds"), "--no-encode", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sources"] == 6 and summary["rejected"] >= 5

    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "prepare.json").write_text("{not json")
    for out, words in ((a_file, "cannot create the dataset folder"), (damaged, "not readable JSON")):
        assert main(["prepare", str(src), "--out", str(out), "--no-encode", "--quiet"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and str(out) in lines[0], lines
    assert a_file.read_text() == "not a folder" and (damaged / "prepare.json").read_text() == "{not json"


def test_a_clip_that_fails_to_encode_is_rejected_and_the_rest_is_sharded(
    two_videos, tiny_checkpoint, tmp_path, monkeypatch
):
    victim = sorted(str(p) for p in two_videos.glob("*.mp4"))[0]
    real = prepare_module.encode_clip

    def encode_or_fail(clip, *args):
        if clip.source == victim:
            raise OSError("Input/output error")  # a read error while decoding, as a failing disk gives
        return real(clip, *args)

    monkeypatch.setattr(prepare_module, "encode_clip", encode_or_fail)
    prepare(two_videos, tmp_path / "ds", _small_cfg(tiny_checkpoint), progress=False)
    records = read_manifest(tmp_path / "ds" / "manifest.jsonl")
    failed = [r for r in records if r["source"] == victim and r["reasons"] == ["error"]]
    assert failed and all("Input/output error" in r["detail"] and "shard" not in r for r in failed)
    kept = [r for r in records if r["status"] == "kept"]
    assert kept and all(r["source"] != victim for r in kept)
    (z,) = [checkpoint.load(p)[0]["latents"] for p in (tmp_path / "ds" / "latents").glob("shard_*")]
    assert z.shape[0] == len(kept)


# ----------------------------------------------------------------------------- the record


def test_clip_records_round_trip_through_json_and_pickle(two_videos, tiny_checkpoint, tmp_path):
    out = tmp_path / "ds"
    prepare(two_videos, out, _small_cfg(tiny_checkpoint), progress=False)
    rows = read_manifest(out / "manifest.jsonl")
    assert rows and any(r["status"] == "kept" for r in rows)
    for row in rows:
        rec = ClipRecord.from_dict(row)
        assert rec.to_dict() == row
        assert pickle.loads(pickle.dumps(rec)) == rec
        assert ClipRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    rejected = ClipRecord.rejected_source("/v/a.mp4", {"reason": "empty_file", "detail": "the file has 0 bytes"})
    assert set(rejected.to_dict()) == {"id", "source", "reasons", "detail", "status"}


# ----------------------------------------------------------------------------- sizes from the components


def _vae_checkpoint(path: Path, cfg: VAEConfig) -> Path:
    checkpoint.save(path, VideoVAE(cfg).state_dict(), to_dict(cfg), kind="vae")
    return path


def test_valid_sizes_follow_the_vae_and_the_dit_patch(tmp_path, tiny_checkpoint):
    fine_cfg = VAEConfig(base_channels=8, channel_mults=(1, 2), temporal_downsamples=1)
    fine = _vae_checkpoint(tmp_path / "fine.safetensors", fine_cfg)
    geometry = geometry_of(str(fine))
    assert (geometry.spatial_factor, geometry.temporal_factor, geometry.unit_px) == (8, 2, 16)  # patch 2: default
    check_config(PrepareConfig(checkpoint=str(fine), shapes=("48x80",), frames=7))
    with pytest.raises(ValueError, match="try 64"):
        check_config(PrepareConfig(checkpoint=str(tiny_checkpoint), shapes=("48x64",), frames=9))
    with pytest.raises(ValueError, match="try 9"):
        check_config(PrepareConfig(checkpoint=str(tiny_checkpoint), shapes=("64x64",), frames=7))

    cfg = copy.deepcopy(PRESETS["tiny"])
    cfg.dit.patch_hw = 4
    wide = tmp_path / "wide.safetensors"
    tensors = {f"vae.{k}": v for k, v in VideoVAE(cfg.vae).state_dict().items()}
    checkpoint.save(wide, tensors, to_dict(cfg), kind="generator")
    geometry = geometry_of(str(wide))
    assert geometry.patch_hw == 4 and geometry.unit_px == 4 * geometry.spatial_factor == 64
    check_config(PrepareConfig(checkpoint=str(wide), shapes=("128x64",), frames=9))
    with pytest.raises(ValueError, match="multiple of 64"):
        check_config(PrepareConfig(checkpoint=str(wide), shapes=("96x64",), frames=9))


def test_the_dataset_vae_is_the_checkpoints_vae(tiny_checkpoint, tmp_path):
    path = copy_vae(str(tiny_checkpoint), tmp_path / "vae.safetensors")
    a, b = load_video_vae(tiny_checkpoint).state_dict(), load_video_vae(path).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(checkpoint.CheckpointError, match="pass a generation"):
        other = tmp_path / "opt.safetensors"
        checkpoint.save(other, {"x": torch.zeros(1)}, {}, kind="optimizer")
        load_vae(str(other))


# ----------------------------------------------------------------------------- layers point one way


def _tessera_imports(folder: Path) -> dict[str, set[str]]:
    out = {}
    for path in folder.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
        out[str(path.relative_to(ROOT))] = {n for n in names if n.startswith("tessera")}
    return out


def test_preparation_imports_neither_training_nor_the_pipeline_nor_the_shapes_world():
    banned = ("tessera.train", "tessera.training", "tessera.pipeline", "tessera.cli", "tessera.data.world")
    for path, names in _tessera_imports(ROOT / "tessera" / "data" / "ingest").items():
        assert not [n for n in names if n.startswith(banned)], path
    for path, names in _tessera_imports(ROOT / "tessera" / "data" / "world").items():
        assert not [n for n in names if n.startswith(banned[:4] + ("tessera.data.ingest",))], path


def test_an_item_that_kills_its_worker_process_is_rejected_and_the_others_finish(tmp_path):
    from fixtures.stages import echo_or_die

    from tessera.data.ingest.prepare import Journal, Runner

    keys = [f"clip{i}" for i in range(8)]
    with Runner(workers=2, progress=False) as runner:
        done = runner.run("crash", Journal(tmp_path / "j.jsonl"), [(k, echo_or_die, (k, "clip2")) for k in keys])
    assert done["clip2"]["reason"] == "crashed"
    assert {k: done[k] for k in keys if k != "clip2"} == {k: {"key": k} for k in keys if k != "clip2"}
    assert Journal(tmp_path / "j.jsonl").done == done


def test_a_portrait_phone_video_is_probed_and_read_upright(tmp_path):
    import numpy as np
    from damage import portrait_phone_video

    from tessera.data.ingest.probe import probe_video, read_frames
    from tessera.export import write_mp4

    video = np.zeros((16, 64, 96, 3), np.uint8)
    video[:, :, :24] = 255  # a white band on the left of the coded frames: on top once upright
    phone = portrait_phone_video(write_mp4(video, tmp_path / "coded.mp4", fps=8), tmp_path / "phone.mp4")
    info = probe_video(phone)
    assert (info["width_px"], info["height_px"]) == (64, 96)
    rgb, grey = read_frames(phone, [0.0, 1.0]), read_frames(phone, [0.5], fmt="gray")
    assert rgb.shape == (2, 96, 64, 3) and grey.shape == (1, 96, 64)
    assert rgb[:, :20].mean() > 240 and rgb[:, -60:].mean() < 15
