"""End to end: `python -m tessera ...` in a subprocess, as a user or a script runs it.

Every run must end with a documented exit code and no traceback; generations use the tiny
checkpoint with `--steps 1` and small sizes. The full table (over 40 runs) is marked slow; the
default run keeps two of them and the SIGTERM test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from damage import bit_flipped, truncated, with_config

from tessera.export import write_mp4

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--steps", "1", "--width", "128", "--height", "128", "--duration-s", "0.5"]
PROMPT = "a blue square moving right on a gray background"


def tessera(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TESSERA_HOME": str(home)}
    env.pop("TESSERA_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "tessera", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def records(home: Path) -> list[dict]:
    """The ledger records under TESSERA_HOME `home`, oldest first (empty when nothing was recorded)."""
    import dataclasses

    from tessera.safety.ledger import LEDGER_FILE, Ledger

    path = home / LEDGER_FILE
    return [dataclasses.asdict(e.record) for e in Ledger(path).entries()] if path.exists() else []


@pytest.fixture(scope="module")
def world(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("e2e")
    frames = np.random.default_rng(1).integers(0, 255, (9, 128, 128, 3), dtype=np.uint8)
    plain = write_mp4(frames, root / "plain.mp4", fps=8)
    (root / "src").mkdir()
    (root / "src" / "good.mp4").write_bytes(plain.read_bytes())
    (root / "src" / "cut.mp4").write_bytes(truncated(plain.read_bytes(), 900))
    (root / "src" / "noise.mp4").write_bytes(os.urandom(2000))
    (root / "folder.mp4").mkdir()
    (root / "cut.mp4").write_bytes(truncated(plain.read_bytes(), 1500))
    (root / "flipped.mp4").write_bytes(bit_flipped(plain.read_bytes(), [100, 2000, 5000]))
    (root / "random.mp4").write_bytes(os.urandom(5000))
    return {
        "root": root,
        "ckpt": Path(tiny_checkpoint),
        "plain": plain,
        "notjson": with_config(tiny_checkpoint, root / "notjson.safetensors", "{no"),
        "encoder": with_config(
            tiny_checkpoint, root / "enc.safetensors", edit=lambda c: c.update(text={"kind": "hf", "path": "/nope"})
        ),
    }


def gen(w, out: str, *extra: str, ckpt: str = "ckpt") -> list[str]:
    return ["generate", PROMPT, "-o", out, "--checkpoint", str(w[ckpt]), *SMALL, *extra]


# (id, argv from the world and a fresh folder, expected exit codes)
GOOD_GENERATIONS = [
    ("gen-default-seed", lambda w, d: gen(w, f"{d}/a.mp4")),
    ("gen-seed-max", lambda w, d: gen(w, f"{d}/a.mp4", f"--seed={2**64 - 1}")),
    ("gen-portrait", lambda w, d: gen(w, f"{d}/a.mp4", "--height=192")),
    ("gen-landscape", lambda w, d: gen(w, f"{d}/a.mp4", "--width=192")),
    ("gen-fps-1", lambda w, d: gen(w, f"{d}/a.mp4", "--fps=1")),
    ("gen-fps-4-1s", lambda w, d: gen(w, f"{d}/a.mp4", "--fps=4", "--duration-s=1")),
    ("gen-guidance-0", lambda w, d: gen(w, f"{d}/a.mp4", "--guidance=0")),
    ("gen-guidance-50", lambda w, d: gen(w, f"{d}/a.mp4", "--guidance=50")),
    ("gen-upper-suffix", lambda w, d: gen(w, f"{d}/A.MP4")),
    (
        "gen-unicode-prompt",
        lambda w, d: (
            ["generate", "ein roter Kreis ✓ 動画", "-o", f"{d}/a.mp4"] + ["--checkpoint", str(w["ckpt"]), *SMALL]
        ),
    ),  # fmt: skip
]
REFUSALS = [
    ("gen-nan-guidance", lambda w, d: gen(w, f"{d}/a.mp4", "--guidance=nan"), {2}),
    ("gen-inf-guidance", lambda w, d: gen(w, f"{d}/a.mp4", "--guidance=inf"), {2}),
    ("gen-width-0", lambda w, d: gen(w, f"{d}/a.mp4", "--width=0"), {2}),
    ("gen-height-0", lambda w, d: gen(w, f"{d}/a.mp4", "--height=0"), {2}),
    ("gen-fps-0", lambda w, d: gen(w, f"{d}/a.mp4", "--fps=0"), {2}),
    ("gen-width-250", lambda w, d: gen(w, f"{d}/a.mp4", "--width=250"), {2}),
    ("gen-seed-65-bits", lambda w, d: gen(w, f"{d}/a.mp4", f"--seed={2**64}"), {2}),
    ("gen-steps-0", lambda w, d: gen(w, f"{d}/a.mp4", "--steps=0"), {2}),
    ("gen-empty-prompt", lambda w, d: ["generate", " ", "-o", f"{d}/a.mp4", "--checkpoint", str(w["ckpt"])], {2}),
    ("gen-output-folder", lambda w, d: gen(w, str(w["root"] / "folder.mp4")), {2}),
    ("gen-output-avi", lambda w, d: gen(w, f"{d}/a.avi"), {2}),
    ("gen-output-no-folder", lambda w, d: gen(w, f"{d}/missing/a.mp4"), {2}),
    ("gen-output-device", lambda w, d: (os.symlink("/dev/full", f"{d}/n.mp4"), gen(w, f"{d}/n.mp4"))[1], {2}),
    ("gen-ckpt-missing", lambda w, d: gen(w, f"{d}/a.mp4") + ["--checkpoint", f"{d}/none.safetensors"], {2}),
    ("gen-ckpt-not-json", lambda w, d: gen(w, f"{d}/a.mp4", ckpt="notjson"), {2}),
    ("gen-ckpt-no-encoder", lambda w, d: gen(w, f"{d}/a.mp4", ckpt="encoder"), {2}),
    ("gen-ckpt-is-video", lambda w, d: gen(w, f"{d}/a.mp4", ckpt="plain"), {2}),
    ("gen-bad-flag", lambda w, d: gen(w, f"{d}/a.mp4", "--steps=many"), {2}),
    ("verify-plain", lambda w, d: ["verify", str(w["plain"])], {1}),
    ("verify-truncated", lambda w, d: ["verify", str(w["root"] / "cut.mp4")], {1, 2}),
    ("verify-flipped", lambda w, d: ["verify", str(w["root"] / "flipped.mp4")], {1, 2}),
    ("verify-random", lambda w, d: ["verify", str(w["root"] / "random.mp4")], {2}),
    ("verify-folder", lambda w, d: ["verify", str(w["root"] / "folder.mp4")], {2}),
    ("verify-missing", lambda w, d: ["verify", f"{d}/none.mp4"], {2}),
    ("eval-batch-0", lambda w, d: ["eval", "--checkpoint", str(w["ckpt"]), "--batch=0"], {2}),
    ("eval-guidance-nan", lambda w, d: ["eval", "--checkpoint", str(w["ckpt"]), "--guidance=nan"], {2}),
    ("eval-one-prompt", lambda w, d: ["eval", "--checkpoint", str(w["ckpt"]), "--prompts=1", *SMALL], {0}),
    ("train-lr-nan", lambda w, d: ["train", "vae", "--preset=tiny", f"--out={d}/run", "--vae-lr=nan"], {2}),
    ("train-steps-0", lambda w, d: ["train", "dit", "--preset=tiny", f"--out={d}/run", "--dit-steps=0"], {2}),
    ("train-out-is-file", lambda w, d: ["train", "vae", "--preset=tiny", f"--out={w['plain']}"], {2}),
    (
        "prepare-damaged",
        lambda w, d: ["prepare", str(w["root"] / "src"), f"--out={d}/ds", "--no-encode", "--quiet"] + ["--min-s=0.5"],
        {0},
    ),  # fmt: skip
    ("prepare-missing", lambda w, d: ["prepare", f"{d}/nothing", f"--out={d}/ds"], {2}),
]
DEFAULT_RUN = {"gen-nan-guidance", "verify-random", "signal-15"}


KNOWN: dict[str, str] = {}  # refusals that still leave something behind (none now), marked strict xfail until fixed


def _marks(case_id: str):
    marks = [] if case_id in DEFAULT_RUN else [pytest.mark.slow]
    if case_id in KNOWN:
        marks.append(pytest.mark.xfail(reason=KNOWN[case_id], strict=True))
    return marks


@pytest.mark.parametrize("argv", [pytest.param(a, id=i, marks=_marks(i)) for i, a in GOOD_GENERATIONS])
def test_generation_writes_one_file_one_record_and_verifies(argv, world, tmp_path):
    home = tmp_path / "home"
    run = tessera(*argv(world, str(tmp_path)), home=home)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    printed = json.loads(run.stdout.strip().splitlines()[-1])
    out = Path(printed["output"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["home", out.name])
    assert [r["generation_id"] for r in records(home)] == [printed["generation_id"]]
    check = tessera("verify", str(out), "--json", home=home)
    assert check.returncode == 0 and "Traceback" not in check.stderr, check.stderr
    assert json.loads(check.stdout)["ledger"]["generation_id"] == printed["generation_id"]


@pytest.mark.parametrize("argv,codes", [pytest.param(a, c, id=i, marks=_marks(i)) for i, a, c in REFUSALS])
def test_every_run_ends_with_a_documented_code_and_no_traceback(argv, codes, world, tmp_path):
    home = tmp_path / "home"
    args = argv(world, str(tmp_path))
    before = sorted(p.name for p in world["root"].iterdir()), sorted(p.name for p in tmp_path.iterdir())
    run = tessera(*args, home=home)
    assert run.returncode in codes and "Traceback" not in run.stderr, (run.returncode, run.stderr[-2000:])
    if run.returncode == 2:
        assert "generating" not in run.stderr and records(home) == []
        assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == before[1]
    assert sorted(p.name for p in world["root"].iterdir()) == before[0]


@pytest.mark.parametrize(
    "sig,code",
    [
        pytest.param(s, c, id=f"signal-{int(s)}", marks=_marks(f"signal-{int(s)}"))
        for s, c in ((signal.SIGTERM, 143), (signal.SIGINT, 130))
    ],
)
def test_a_signal_during_generation_leaves_no_file_and_no_record(sig, code, world, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TESSERA_HOME": str(tmp_path / "home")}
    argv = ["generate", PROMPT, "-o", str(tmp_path / "v.mp4"), "--checkpoint", str(world["ckpt"]), "--steps=1000"]
    proc = subprocess.Popen([sys.executable, "-m", "tessera", *argv], stderr=subprocess.PIPE, text=True, env=env)
    seen = ""
    while "generating" not in seen and proc.poll() is None:
        seen += proc.stderr.readline()
    time.sleep(1.0)
    assert proc.poll() is None, "the generation ended before the signal"
    proc.send_signal(sig)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == code and "Traceback" not in rest, rest[-2000:]
    assert records(tmp_path / "home") == []
    assert not (tmp_path / "v.mp4").exists() and [p for p in tmp_path.iterdir() if p.name != "home"] == []
