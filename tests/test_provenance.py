"""Keys, ledger, C2PA manifest and `tessera verify`: forgery, tampering, stripping, crashes, concurrency, false matches."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from tessera.cli import main
from tessera.errors import InputError
from tessera.export import read_video, write_mp4
from tessera.safety import fingerprint as fp
from tessera.safety import watermark as wm
from tessera.safety.keys import LEGACY_KEY, InstallationKey, load_key
from tessera.safety.ledger import Ledger, ProvenanceRecord
from tessera.safety.provenance import Provenance, read_manifest

T, H, W = 12, 160, 224


def scene(seed: int, t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """Textured background with two moving disks: structure enough to hash and to mark. (T, H, W, 3) uint8"""
    rng = np.random.default_rng(seed)
    bg = gaussian_filter(rng.normal(size=(h, w + 2 * t, 3)), (6, 6, 0))
    bg = (bg - bg.mean()) / bg.std() * 30 + 100
    yy, xx = np.mgrid[:h, :w]
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        frame = bg[:, 2 * i : 2 * i + w].copy()
        for c, col in ((rng.uniform(0.3, 0.7, 2) * [h, w], (220, 40, 40)), ((h / 2, w / 4 + 3 * i), (240, 240, 240))):
            frame[(yy - c[0]) ** 2 + (xx - c[1]) ** 2 < 25**2] = col
        out[i] = np.clip(frame, 0, 255)
    return out


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh TESSERA_HOME, with no fleet key in the environment."""
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TESSERA_KEY", raising=False)
    monkeypatch.delenv("TESSERA_C2PA_CERT", raising=False)
    return tmp_path / "home"


def generate_file(prov: Provenance, path: Path, seed: int, generation_id: str) -> ProvenanceRecord:
    """What the pipeline does: mark, record, write, sign, append."""
    frames = prov.watermarker.mark(scene(seed), "tessera-small", generation_id)
    record = ProvenanceRecord.create(
        frames,
        prompt=f"scene {seed}",
        key=prov.key,
        generation_id=generation_id,
        kind="generate",
        model_id="tessera-small",
        model_hash="0" * 64,
        seed=seed,
        settings={"steps": 2},
        filter_decision="allowed",
    )
    write_mp4(frames, path, fps=8)
    prov.sign(path, record)
    prov.ledger.append(record)
    return record


def verify(path: Path, capsys, *extra: str) -> tuple[int, dict]:
    code = main(["verify", "--json", str(path), *extra])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# -- keys -----------------------------------------------------------------------------------------


def test_installation_key_is_created_once_private_and_stable(home, monkeypatch):
    key = load_key()
    path = home / "keys" / "installation.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key().secret == key.secret and len(key.secret) == 32
    assert key.secret.hex() not in repr(key)  # never printed
    os.chmod(path, 0o644)
    with pytest.raises(InputError, match="chmod 600"):
        load_key()
    monkeypatch.setenv("TESSERA_KEY", "ab" * 32)  # a fleet's shared key wins over the file
    assert load_key().secret == bytes.fromhex("ab" * 32)
    monkeypatch.setenv("TESSERA_KEY", "not-hex")
    with pytest.raises(InputError, match="64 hex digits"):
        load_key()


def test_two_installations_get_different_keys(tmp_path, monkeypatch):
    monkeypatch.delenv("TESSERA_KEY", raising=False)
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "a"))
    a = load_key()
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "b"))
    assert load_key().secret != a.secret


# -- ledger ---------------------------------------------------------------------------------------


def _record(i: int, key: InstallationKey, frames: np.ndarray | None = None) -> ProvenanceRecord:
    return ProvenanceRecord.create(
        scene(i, t=4) if frames is None else frames,
        prompt=f"p{i}",
        key=key,
        generation_id=f"gen-{i}",
        kind="generate",
        model_id="tessera-small",
        model_hash="0" * 64,
        seed=i,
        settings={"steps": 2},
        filter_decision="allowed",
    )


def test_ledger_round_trip_lookups_and_prompt_privacy(tmp_path):
    key = InstallationKey(bytes(32), "test")
    ledger = Ledger(tmp_path / "l.sqlite3", key)
    a = _record(1, key)
    ledger.append(a)
    ledger.append(_record(2, key))
    assert ledger.get("gen-1").record == a and ledger.get("gen-1").signature_ok
    assert a.prompt is None and a.prompt_sha256 != "p1"  # the prompt is not kept unless asked
    assert ledger.find_payload(wm.make_payload("tessera-small", "gen-2")).record.generation_id == "gen-2"
    assert ledger.nearest(scene(2, t=4)).record.generation_id == "gen-2"
    assert Ledger(tmp_path / "l.sqlite3", InstallationKey(bytes([1] * 32), "other")).get("gen-1").signature_ok is False


def test_an_edited_ledger_row_fails_its_signature(tmp_path):
    import sqlite3

    key = InstallationKey(bytes(32), "test")
    ledger = Ledger(tmp_path / "l.sqlite3", key)
    ledger.append(_record(1, key))
    with sqlite3.connect(tmp_path / "l.sqlite3") as db:
        db.execute("UPDATE records SET body = replace(body, '\"seed\":1', '\"seed\":7')")
    entry = ledger.get("gen-1")
    assert entry.record.seed == 7 and entry.signature_ok is False


def _append_many(path: str, start: int, n: int) -> None:
    key = InstallationKey(bytes(32), "test")
    ledger = Ledger(path, key)
    frames = np.zeros((1, 32, 32, 3), np.uint8)
    for i in range(start, start + n):
        ledger.append(_record(i, key, frames))


def test_eight_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "l.sqlite3")
    ctx = mp.get_context("fork")  # the children share the parent's imports
    procs = [ctx.Process(target=_append_many, args=(path, 100 * k, 1)) for k in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    entries = Ledger(path, InstallationKey(bytes(32), "test")).entries()
    assert sorted(e.record.generation_id for e in entries) == sorted(f"gen-{100 * k}" for k in range(8))
    assert all(e.signature_ok for e in entries)  # whole rows, none interleaved


def test_kill_9_mid_write_leaves_a_readable_ledger(tmp_path):
    path = tmp_path / "l.sqlite3"
    code = f"from tests.test_provenance import _append_many; _append_many({str(path)!r}, 0, 100000)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent.parent)
    deadline = time.time() + 60
    while time.time() < deadline and (not path.exists() or path.stat().st_size < 8192):
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    entries = Ledger(path, InstallationKey(bytes(32), "test")).entries()
    assert len(entries) > 0 and all(e.signature_ok for e in entries)
    assert [e.record.generation_id for e in entries] == [f"gen-{i}" for i in range(len(entries))]  # a prefix
    Ledger(path, InstallationKey(bytes(32), "test")).append(_record(999999, InstallationKey(bytes(32), "test")))


def test_ledger_export_and_prune_commands(home, capsys):
    key = load_key()
    ledger = Ledger(key=key)
    old = _record(1, key)
    old.created_at = (datetime.now(UTC) - timedelta(days=400)).isoformat(timespec="seconds")
    ledger.append(old)
    ledger.append(_record(2, key))
    out = home / "export.jsonl"
    assert main(["ledger", "export", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["record"]["generation_id"] for x in lines] == ["gen-1", "gen-2"] and all(x["signature"] for x in lines)
    assert main(["ledger", "prune", "--older-than-days", "365"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pruned"] == 1
    assert [e.record.generation_id for e in Ledger(key=key).entries()] == ["gen-2"]
    assert main(["ledger", "prune", "--older-than-days", "-1"]) == 2


# -- the fingerprint fallback never names a generation for a plain clip ----------------------------


def plain_clips() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    ramp = lambda g: np.repeat(np.clip(g, 0, 255).astype(np.uint8)[None, ..., None], T, 0).repeat(3, -1)
    noise = np.random.default_rng(0).normal(0, 1.0, (T, H, W, 1))
    return {
        "black": np.zeros((T, H, W, 3), np.uint8),
        "solid": np.full((T, H, W, 3), (200, 30, 90), np.uint8),
        "ramp_x": ramp(xx / W * 255),
        "ramp_diag": ramp((xx + yy) / (W + H) * 200 + 20),
        "near_flat": np.clip(120 + noise, 0, 255).astype(np.uint8).repeat(3, -1),
    }


def test_plain_clips_never_match_even_a_black_record(tmp_path):
    """Before: a black record (all-zero hash) matched solid and gradient clips at distance 0."""
    key = InstallationKey(bytes(32), "test")
    ledger = Ledger(tmp_path / "l.sqlite3", key)
    clips = plain_clips()
    for name, clip in clips.items():
        record = _record(0, key, clip)
        record.generation_id = name
        ledger.append(record)
    ledger.append(_record(5, key))
    for name, clip in clips.items():
        assert fp.fallback_refusal(clip) is not None, name
        assert ledger.nearest(clip) is None, name
    assert fp.fallback_refusal(scene(5)) is None
    assert ledger.nearest(scene(5, t=4)).record.generation_id == "gen-5"  # real content still matches


def test_verify_small_black_png_and_plain_clips_find_nothing(home, tmp_path, capsys):
    """Before: a traceback for images smaller than the hash grid, and plain clips matched a black record."""
    prov = Provenance()
    record = _record(0, prov.key, np.zeros((T, H, W, 3), np.uint8))
    prov.ledger.append(record)  # the black record that used to match everything plain
    png = tmp_path / "black.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    code, out = verify(png, capsys)
    assert code == 1 and not out["traced"] and out["ledger"]["fallback_refused"]
    for name, clip in plain_clips().items():
        code, out = verify(write_mp4(clip, tmp_path / f"{name}.mp4", fps=8), capsys)
        assert code == 1 and not out["ledger"]["found"] and not out["mark"]["present"], name


def test_a_fallback_match_says_it_is_a_fallback_and_how_far(home, tmp_path, capsys):
    """A clip whose mark was scrubbed (here: never added) is traced by hash, flagged as such, with its distance."""
    prov = Provenance()
    clean = scene(9)
    prov.ledger.append(_record(9, prov.key, prov.watermarker.mark(clean, "tessera-small", "gen-9")))
    code, out = verify(write_mp4(clean, tmp_path / "scrubbed.mp4", fps=8, crf=28), capsys)
    assert code == 0 and not out["mark"]["present"]
    assert out["ledger"]["by"] == "fingerprint" and out["ledger"]["fallback"] is True
    assert 0.0 <= out["ledger"]["distance"] <= fp.MATCH_DISTANCE and "fallback" in out["verdict"]


# -- manifest, foreign keys, stripping, tampering, exit codes -------------------------------------


def test_our_file_verifies_by_mark_manifest_and_ledger(home, tmp_path, capsys):
    path = tmp_path / "ours.mp4"
    record = generate_file(Provenance(), path, 3, "gen-ours")
    code, out = verify(path, capsys)
    assert code == 0 and out["traced"]
    assert out["mark"]["origin"] == "ours" and out["mark"]["payload"] == record.payload
    assert out["manifest"]["signature_valid"] and out["manifest"]["generation"]["generation_id"] == "gen-ours"
    assert out["manifest"]["soft_binding"] == record.payload and out["ledger"]["manifest_agrees_with_mark"]
    assert out["ledger"]["by"] == "mark" and out["ledger"]["signature_ok"]
    assert main(["verify", str(path)]) == 0  # the human form
    assert "verdict:" in capsys.readouterr().out


def test_another_installations_file_is_foreign(home, tmp_path, capsys, monkeypatch):
    path = tmp_path / "theirs.mp4"
    load_key()  # ours
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "elsewhere"))  # another installation, its own key and ledger
    generate_file(Provenance(), path, 4, "gen-theirs")
    monkeypatch.setenv("TESSERA_HOME", str(home))
    code, out = verify(path, capsys)
    assert code == 1 and not out["traced"]
    assert out["mark"]["present"] and out["mark"]["origin"] == "foreign" and out["mark"]["payload"] is None
    assert "another installation" in out["verdict"]


def test_a_stripped_manifest_is_still_traced_by_mark_and_ledger(home, tmp_path, capsys):
    path = tmp_path / "ours.mp4"
    generate_file(Provenance(), path, 5, "gen-strip")
    frames, _ = read_video(path)
    stripped = write_mp4(frames, tmp_path / "stripped.mp4", fps=8, crf=23)  # a re-encode drops the manifest
    code, out = verify(stripped, capsys)
    assert not out["manifest"]["present"]
    assert code == 0 and out["ledger"]["generation_id"] == "gen-strip" and out["ledger"]["by"] == "mark"


def test_a_tampered_manifest_fails_verification(home, tmp_path, capsys):
    path = tmp_path / "ours.mp4"
    generate_file(Provenance(), path, 6, "gen-tamper")
    data = bytearray(path.read_bytes())
    at = data.index(b"gen-tamper")
    data[at : at + 10] = b"gen-forged"  # rewrite the generation id inside the signed manifest
    path.write_bytes(bytes(data))
    assert not read_manifest(path).signature_valid
    code, out = verify(path, capsys)
    assert out["manifest"]["present"] and not out["manifest"]["signature_valid"] and out["manifest"]["failures"]
    assert "fails verification" in out["verdict"]


def test_legacy_files_read_as_legacy(home, tmp_path, capsys):
    frames = wm.embed(scene(7), wm.make_payload("tessera-small", "gen-old"), LEGACY_KEY)
    path = write_mp4(frames, tmp_path / "old.mp4", fps=8)
    code, out = verify(path, capsys)
    assert code == 0 and out["mark"]["origin"] == "legacy" and "legacy" in out["verdict"]


def test_records_of_the_old_jsonl_registry_are_imported_once_and_trace_old_files(home, tmp_path, capsys):
    frames = wm.embed(scene(7), wm.make_payload("tessera-small", "gen-old"), LEGACY_KEY)
    path = write_mp4(frames, tmp_path / "old.mp4", fps=8)
    old = {"generation_id": "gen-old", "model_id": "tessera-small", "prompt": "a red circle", "seed": 3, "steps": 25,
           "guidance": 4.0, "width_px": W, "height_px": H, "frames": T, "fps": 8,
           "created_at": "2026-11-20T10:00:00+00:00", "video_hash": fp.video_hash(read_video(path)[0])}  # fmt: skip
    home.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(old), json.dumps({"generation_id": "x"}), '{"generation_id": "torn", "mod']
    (home / "fingerprints.jsonl").write_text("\n".join(lines))
    assert main(["ledger", "import"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["imported"] == 1 and [s["line"] for s in out["skipped"]] == [2, 3]
    assert main(["ledger", "import"]) == 0  # a second run adds nothing
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["already_present"] == 1
    entry = Ledger(key=load_key()).get("gen-old")
    assert entry.signature_ok and entry.record.prompt is None and entry.record.key_id == "legacy"
    assert entry.record.prompt_sha256 != "" and entry.record.settings["steps"] == 25
    code, report = verify(path, capsys)
    assert code == 0 and report["ledger"]["generation_id"] == "gen-old" and report["mark"]["origin"] == "legacy"
    assert main(["ledger", "import", str(tmp_path / "missing.jsonl")]) == 2


def test_a_ledger_that_is_no_ledger_and_bad_ages_exit_2_naming_the_fix(home, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 100)
    for ledger in (notes, tmp_path):  # a text file, a folder
        assert main(["ledger", "--ledger", str(ledger), "export", str(tmp_path / "out.jsonl")]) == 2
        assert "cannot be opened" in capsys.readouterr().err
    assert notes.read_text() == "not a database\n" * 100  # left as it was
    for days in ("nan", "inf", "-1"):
        assert main(["ledger", "prune", "--older-than-days", days]) == 2
        assert "--older-than-days" in capsys.readouterr().err
    assert main(["ledger", "import", str(notes)]) == 2  # a file of which no line is a record
    assert "no line" in capsys.readouterr().err and not (home / "ledger.sqlite3").exists()


def test_verify_exit_codes_for_bad_input_and_internal_errors(home, tmp_path, capsys, monkeypatch):
    assert main(["verify", str(tmp_path / "missing.mp4")]) == 2
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    assert main(["verify", str(tmp_path / "junk.mp4")]) == 2
    path = write_mp4(scene(8), tmp_path / "plain.mp4", fps=8)
    assert main(["verify", str(path)]) == 1

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(wm, "detect", broken)
    assert main(["verify", str(path)]) == 4
    assert "please report" in capsys.readouterr().err


# -- output check ---------------------------------------------------------------------------------


def test_output_check_uses_a_local_classifier_and_refuses_above_threshold(tmp_path):
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from tessera.errors import UnsafePromptError
    from tessera.safety.output_check import OutputCheck, OutputCheckConfig

    labels = {0: "safe", 1: "nsfw"}
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32)
    cfg.patch_size, cfg.id2label, cfg.label2id = 16, labels, {v: k for k, v in labels.items()}
    torch.manual_seed(0)
    ViTForImageClassification(cfg).save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    frames = scene(1, t=4)
    assert OutputCheck(OutputCheckConfig()).check(frames) == {
        "checked": False,
        "value": None,
        "threshold": None,
        "pass": True,
    }
    loose = OutputCheck(OutputCheckConfig(model=str(tmp_path / "vit"), max_unsafe=1.0)).check(frames)
    assert loose["checked"] and 0.0 < loose["value"] < 1.0
    with pytest.raises(UnsafePromptError) as refused:
        OutputCheck(OutputCheckConfig(model=str(tmp_path / "vit"), max_unsafe=loose["value"] / 2)).check(frames)
    assert refused.value.category == "unsafe-output" and refused.value.exit_code == 3
