"""Property-based tests of every command over its arguments and over damaged files.

Each example drives the real CLI in process (`tessera.cli.main`) in a fresh folder and ledger,
with the tiny checkpoint from conftest.py; where the arguments are valid, generation really runs
(`--steps 1`, small sizes). Every example asserts:

* the exit code is in the documented set, and is the one expected when the inputs are known to
  be good (0) or bad (2);
* stderr holds no traceback, and a refusal is one line that comes before any generation;
* on failure nothing is left at or beside the output path (an existing file is untouched);
* the ledger gains exactly one record, for the file written, on success and none otherwise.

The example count per command is TESSERA_FUZZ_EXAMPLES (default 20, a few seconds each on
two cores); CI and the issue's acceptance run use 500: `TESSERA_FUZZ_EXAMPLES=500 pytest
tests/test_fuzz_cli.py`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from damage import bit_flipped, truncated, with_config
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tessera.cli import main
from tessera.export import write_mp4

EXAMPLES = os.environ.get("TESSERA_FUZZ_EXAMPLES")  # one count for every command; unset: the defaults below


def examples(default: int) -> int:
    return int(EXAMPLES) if EXAMPLES else default


def fuzz(default: int) -> settings:
    return settings(
        max_examples=examples(default),
        deadline=None,
        database=None,
        derandomize=os.environ.get("TESSERA_FUZZ_RANDOM") != "1",  # the same cases on every CI run
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def good_share(n: int) -> float:
    """Share of cases with all-good inputs, which really generate: about 40 of them at most."""
    return min(0.4, 40 / n)


GENERATE_N, EVAL_N, VERIFY_N, TRAIN_N, PREPARE_N = (examples(n) for n in (8, 5, 40, 60, 12))
DOCUMENTED = {0, 1, 2, 3, 4}
PROMPT = "a red circle moving left on a black background"


# -- running one example ---------------------------------------------------------------------------


@dataclass
class Run:
    rc: int
    out: str
    err: str
    records: list[dict] = field(default_factory=list)


def run_cli(argv: list[str], home: Path) -> Run:
    """`tessera argv` in process with its own ledger under `home`; exit code, stdout, stderr, new records."""
    out, err = io.StringIO(), io.StringIO()
    old = os.environ.get("TESSERA_HOME")
    os.environ["TESSERA_HOME"] = str(home)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    finally:
        if old is None:
            os.environ.pop("TESSERA_HOME", None)
        else:
            os.environ["TESSERA_HOME"] = old
    return Run(rc, out.getvalue(), err.getvalue(), ledger(home))


def ledger(home: Path) -> list[dict]:
    """The ledger records under TESSERA_HOME `home`, oldest first (empty when nothing was recorded)."""
    import dataclasses

    from tessera.safety.ledger import LEDGER_FILE, Ledger

    path = home / LEDGER_FILE
    return [dataclasses.asdict(e.record) for e in Ledger(path).entries()] if path.exists() else []


def assert_clean(run: Run, allowed: set[int]) -> None:
    """Documented exit code, no traceback, a failure told in one `tessera:` line."""
    event(f"exit {run.rc}")
    assert run.rc in DOCUMENTED and run.rc in allowed, (run.rc, run.err[-2000:])
    assert "Traceback" not in run.err, run.err[-2000:]
    if run.rc not in (0, 1):
        told = [line for line in run.err.splitlines() if line.startswith(("tessera: ", "usage: ", "tessera "))]
        assert told, run.err[-2000:]
        assert "internal error" not in run.err, run.err[-2000:]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Names in `folder` (one level) with the bytes of small regular files, to compare after a run."""
    out = {}
    for p in sorted(folder.iterdir()):
        regular = p.is_file() and not p.is_symlink() and p.stat().st_size < 4_000_000
        out[p.name] = p.read_bytes() if regular else None
    return out


# -- files to break ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """Good files once per module: the tiny checkpoint, a marked MP4 with its ledger, a PNG, damaged checkpoints."""
    root = tmp_path_factory.mktemp("fuzz-files")
    home = root / "home"
    video = root / "marked.mp4"
    run = run_cli(["generate", PROMPT, "-o", str(video), "--checkpoint", str(tiny_checkpoint), "--steps", "1"]
                  + ["--width", "128", "--height", "128", "--duration-s", "1"], home)  # fmt: skip
    assert run.rc == 0, run.err
    from PIL import Image

    frames = np.random.default_rng(0).integers(0, 255, (5, 128, 160, 3), dtype=np.uint8)
    write_mp4(frames, root / "plain.mp4", fps=8)
    Image.fromarray(frames[0]).save(root / "frame.png")
    out = {"ckpt": Path(tiny_checkpoint), "video": video, "plain": root / "plain.mp4", "png": root / "frame.png"}
    out["home"] = home
    bad = root / "bad"
    bad.mkdir()
    out["ckpt_notjson"] = with_config(tiny_checkpoint, bad / "notjson.safetensors", "{'vae': no")
    out["ckpt_list"] = with_config(tiny_checkpoint, bad / "list.safetensors", "[1, 2]")
    out["ckpt_types"] = with_config(
        tiny_checkpoint, bad / "types.safetensors", edit=lambda c: c["vae"].update(channel_mults="124")
    )
    out["ckpt_values"] = with_config(
        tiny_checkpoint, bad / "values.safetensors", edit=lambda c: c["dit"].update(heads=3)
    )
    out["ckpt_encoder"] = with_config(
        tiny_checkpoint, bad / "encoder.safetensors", edit=lambda c: c.update(text={"kind": "hf", "path": "/nope"})
    )
    out["ckpt_vae_kind"] = with_config(tiny_checkpoint, bad / "vaekind.safetensors", kind="vae")
    return out


GOOD_CHECKPOINTS = ["good", "symlink"]
BAD_CHECKPOINTS = ["missing", "empty", "random", "folder", "truncated", "header_flip", "data_flip", "notjson", "list",
                   "types", "values", "encoder", "vae_kind", "dangling"]  # fmt: skip


def checkpoint_case(draw, files: dict[str, Path], folder: Path, good: bool) -> tuple[str, bool | None]:
    """A --checkpoint value and whether it is good (True), bad (False) or either (None)."""
    kind = draw(st.sampled_from(GOOD_CHECKPOINTS if good else BAD_CHECKPOINTS))
    target = folder / "model.safetensors"
    data = files["ckpt"].read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    if kind == "good":
        return str(files["ckpt"]), True
    if kind == "symlink":
        target.symlink_to(files["ckpt"])
        return str(target), True
    if kind in ("notjson", "list", "types", "values", "encoder", "vae_kind"):
        return str(files[f"ckpt_{kind}"]), False
    if kind == "missing":
        return str(folder / "missing.safetensors"), False
    if kind == "folder":
        target.mkdir()
        return str(target), False
    if kind == "dangling":
        target.symlink_to(folder / "gone.safetensors")
        return str(target), False
    if kind == "empty":
        target.write_bytes(b"")
    elif kind == "random":
        target.write_bytes(draw(st.binary(min_size=1, max_size=4096)))
    elif kind == "truncated":
        target.write_bytes(truncated(data, draw(st.integers(0, len(data) - 1))))
    elif kind == "header_flip":
        target.write_bytes(bit_flipped(data, draw(st.lists(st.integers(0, header_end - 1), min_size=1, max_size=3))))
    else:  # a flipped bit among the weights: still a checkpoint, maybe with a NaN
        target.write_bytes(bit_flipped(data, [draw(st.integers(header_end, len(data) - 1))]))
        return str(target), None
    return str(target), False if kind != "header_flip" else None


GOOD_OUTPUTS = ["new", "upper", "existing", "symlink_file"]
BAD_OUTPUTS = [
    "is_folder",
    "no_folder",
    "under_file",
    "avi",
    "no_suffix",
    "nul",
    "too_long",
    "device",
    "empty",
    "dot_mp4",
]


def output_case(draw, folder: Path, good: bool) -> tuple[str, bool]:
    """An -o value and whether it can be written."""
    kind = draw(st.sampled_from(GOOD_OUTPUTS if good else BAD_OUTPUTS))
    out = folder / "out.mp4"
    if kind == "new":
        return str(out), True
    if kind == "upper":
        return str(folder / "OUT.MP4"), True
    if kind == "existing":
        out.write_bytes(b"an older file")
        return str(out), True
    if kind == "symlink_file":
        (folder / "elsewhere.bin").write_bytes(b"keep me")
        out.symlink_to(folder / "elsewhere.bin")
        return str(out), True
    if kind == "is_folder":
        out.mkdir()
        return str(out), False
    if kind == "under_file":
        (folder / "file").write_bytes(b"x")
        return str(folder / "file" / "out.mp4"), False
    if kind == "device":
        out.symlink_to("/dev/null")
        return str(out), False
    bad = {
        "no_folder": folder / "missing" / "out.mp4",
        "avi": folder / "out.avi",
        "no_suffix": folder / "out",
        "nul": f"{folder}/o\x00ut.mp4",
        "too_long": folder / ("x" * 300 + ".mp4"),
        "empty": "",
        "dot_mp4": folder / ".mp4",
    }
    return str(bad[kind]), False


def broken_fields(draw, fields: list[str], share_good: float) -> set[str]:
    """Which of `fields` to break: none in about `share_good` of the cases, else one to three."""
    if draw(st.integers(0, 99)) < 100 * share_good:
        return set()
    return draw(st.sets(st.sampled_from(fields), min_size=1, max_size=3))


def flag(name: str, value) -> list[str]:
    return [] if value is None else [f"{name}={value}"]


FLOATS = st.floats(allow_nan=True, allow_infinity=True)


def floats_outside(lo: float, hi: float, low_open: bool = False) -> st.SearchStrategy[float]:
    """Floats not in [lo, hi] ((lo, hi] with low_open): NaN, infinities and finite values either side."""
    below = st.floats(max_value=lo, exclude_max=not low_open)
    return st.one_of(
        st.sampled_from([float("nan"), float("inf"), float("-inf")]), below, st.floats(min_value=hi, exclude_min=True)
    )


def ints_outside(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi + 1))


SIDES = st.one_of(ints_outside(128, 2048), st.integers(129, 2047).filter(lambda v: v % 32))


# -- generate ------------------------------------------------------------------------------------------


GENERATE_ARGS = {
    "--seed": (st.integers(0, 2**64 - 1), ints_outside(0, 2**64 - 1)),
    "--steps": (st.just(1), ints_outside(1, 1000)),
    "--guidance": (st.floats(0, 50), floats_outside(0, 50)),
    "--width": (st.sampled_from([128, 160]), SIDES),
    "--height": (st.sampled_from([128, 192]), SIDES),
    "--duration-s": (st.sampled_from([0.25, 0.5, 1.0]), floats_outside(0, 60, low_open=True)),
    "--fps": (st.sampled_from([1, 4, 8, None]), ints_outside(1, 60)),
}


@st.composite
def generate_case(draw, files, folder: Path):
    """(argv, expected: 0, 2 or None for either, the output path or None)."""
    broken = broken_fields(draw, ["prompt", "-o", "--checkpoint", *GENERATE_ARGS], share_good=good_share(GENERATE_N))
    prompts = (
        st.sampled_from([PROMPT, "x", "Ünïcödé ✓ 動画", "a\tb\nc"])
        if "prompt" not in broken
        else st.sampled_from(["", "  \n "])
    )
    out, _ = output_case(draw, folder, "-o" not in broken)
    ckpt, ckpt_ok = checkpoint_case(draw, files, folder, "--checkpoint" not in broken)
    argv = ["generate", draw(prompts), "-o", out, "--checkpoint", ckpt]
    for name, (good, bad) in GENERATE_ARGS.items():
        argv += flag(name, draw(bad if name in broken else good))
    expected = 2 if broken - {"--checkpoint"} or ckpt_ok is False else (0 if ckpt_ok else None)
    return argv, expected, out


def check_generate(argv, expected, out, home: Path, folder: Path) -> None:
    before = snapshot(folder)
    old_records = len(ledger(home))
    run = run_cli(argv, home)
    assert_clean(run, {0, 2, 3} if expected is None else {expected, 3})
    new = run.records[old_records:]
    if run.rc == 0:
        printed = json.loads(run.out.strip().splitlines()[-1])
        assert [r["generation_id"] for r in new] == [printed["generation_id"]]
        assert Path(printed["output"]).is_file() and Path(printed["output"]) == Path(out)
        left = set(snapshot(folder)) - set(before) - {Path(out).name}
        assert not left, f"files beside the output: {left}"
    else:
        assert "generating" not in run.err or "nothing was written" in run.err
        assert new == [], "a ledger record without its file"
        assert snapshot(folder) == before, "a failed run changed the output folder"


@pytest.mark.filterwarnings("ignore")
@fuzz(GENERATE_N)
@given(data=st.data())
def test_generate_arguments_and_checkpoints(files, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder, home = Path(tmp) / "work", Path(tmp) / "home"
        folder.mkdir()
        argv, expected, out = data.draw(generate_case(files, folder))
        check_generate(argv, expected, out, home, folder)


# -- verify ----------------------------------------------------------------------------------------------


@st.composite
def verify_case(draw, files, folder: Path):
    """(path, expected exit codes)."""
    kind = draw(st.sampled_from(
        ["marked", "plain", "png", "symlink", "truncated", "flipped", "png_truncated", "png_flipped", "random",
         "empty", "folder", "missing", "dangling", "loop", "fifo", "nul", "too_long", "no_read"]
    ))  # fmt: skip
    target = folder / "v.mp4"
    sources = {"marked": files["video"], "plain": files["plain"], "png": files["png"]}
    if kind in sources:
        shutil.copy(sources[kind], target)
        return str(target), {"marked": {0}, "plain": {1}, "png": {1, 2}}[kind]
    if kind == "symlink":
        target.symlink_to(files["video"])
        return str(target), {0}
    if kind in ("truncated", "flipped", "png_truncated", "png_flipped"):
        data = (files["png"] if kind.startswith("png") else files["video"]).read_bytes()
        if kind.endswith("truncated"):
            data = truncated(data, draw(st.integers(0, len(data) - 1)))
        else:
            data = bit_flipped(data, draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)))
        target.write_bytes(data)
        return str(target), {0, 1, 2}
    if kind == "random":
        target.write_bytes(draw(st.binary(max_size=20_000)))
        return str(target), {1, 2}
    if kind == "empty":
        target.write_bytes(b"")
    elif kind == "folder":
        target.mkdir()
    elif kind == "dangling":
        target.symlink_to(folder / "gone.mp4")
    elif kind == "loop":
        target.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "no_read":
        shutil.copy(files["video"], target)
        os.chmod(target, 0)
        return str(target), {0, 2}  # root reads it anyway
    names = {"missing": folder / "missing.mp4", "nul": f"{folder}/v\x00.mp4", "too_long": folder / ("y" * 300)}
    return str(names.get(kind, target)), {2}


@pytest.mark.filterwarnings("ignore")
@fuzz(VERIFY_N)
@given(data=st.data())
def test_verify_damaged_and_odd_files(files, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder, home = Path(tmp), files["home"]
        path, expected = data.draw(verify_case(files, folder))
        before = snapshot(folder)
        run = run_cli(["verify", path, "--json"], home)
        assert_clean(run, expected)
        if run.rc in (0, 1):
            result = json.loads(run.out.strip().splitlines()[-1])
            assert result["traced"] == (run.rc == 0)
        assert snapshot(folder) == before, "verify changed a file"


# -- eval ------------------------------------------------------------------------------------------------


EVAL_ARGS = {
    "--prompts": (st.sampled_from([1, 2]), st.integers(max_value=0)),
    "--seed": GENERATE_ARGS["--seed"],
    "--steps": GENERATE_ARGS["--steps"],
    "--guidance": GENERATE_ARGS["--guidance"],
    "--width": (st.just(128), GENERATE_ARGS["--width"][1]),
    "--height": (st.just(128), GENERATE_ARGS["--height"][1]),
    "--duration-s": (st.just(0.5), GENERATE_ARGS["--duration-s"][1]),
    "--batch": (st.sampled_from([1, 2]), ints_outside(1, 1024)),
}


@st.composite
def eval_case(draw, files, folder: Path):
    broken = broken_fields(draw, ["--checkpoint", "--json", *EVAL_ARGS], share_good=good_share(EVAL_N) * 0.6)
    ckpt, ckpt_ok = checkpoint_case(draw, files, folder, "--checkpoint" not in broken)
    argv = ["eval", "--checkpoint", ckpt]
    for name, (good, bad) in EVAL_ARGS.items():
        argv += flag(name, draw(bad if name in broken else good))
    bad_json = st.sampled_from([str(folder), str(folder / "no" / "e.json"), "a\x00b", ""])
    argv += ["--json", draw(bad_json if "--json" in broken else st.just(str(folder / "eval.json")))]
    expected = 2 if broken - {"--checkpoint"} or ckpt_ok is False else (0 if ckpt_ok else None)
    return argv, expected


@pytest.mark.filterwarnings("ignore")
@fuzz(EVAL_N)
@given(data=st.data())
def test_eval_arguments_and_checkpoints(files, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        argv, expected = data.draw(eval_case(files, folder))
        run = run_cli(argv, folder / "home")
        assert_clean(run, {0, 2} if expected is None else {expected})
        assert (folder / "eval.json").is_file() == (run.rc == 0)
        if run.rc == 0:
            assert "all" in json.loads(run.out)


# -- train: validation only (a real training step takes seconds) ---------------------------------------


@st.composite
def train_case(draw, files, folder: Path):
    """Arguments of which at least one is bad: train must refuse before any work."""
    stage = draw(st.sampled_from(["vae", "dit", "recipe"]))
    good = {
        "--seed": "0", "--vae-steps": "1", "--vae-batch": "1", "--vae-lr": "0.001", "--vae-size": "32",
        "--vae-frames": "5", "--pan-fraction": "0.25", "--dit-steps": "1", "--batch": "1", "--lr": "0.0008",
        "--clips": "8", "--eval-every": "0", "--warmup": "0", "--frames": "5", "--grad-accum": "1",
        "--checkpoint-every": "1", "--token-budget": "0", "--shift": "1.5", "--time-limit-min": "0",
    }  # fmt: skip
    bad = {
        "--seed": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64)),
        "--vae-steps": st.integers(max_value=0), "--dit-steps": st.integers(max_value=0),
        "--vae-batch": st.integers(max_value=0), "--batch": st.integers(max_value=0),
        "--grad-accum": st.integers(max_value=0), "--clips": st.integers(max_value=0),
        "--vae-lr": floats_outside(0, 1, low_open=True), "--lr": floats_outside(0, 1, low_open=True),
        "--pan-fraction": floats_outside(0, 1), "--shift": floats_outside(0.1, 20),
        "--time-limit-min": floats_outside(0, 1e6),
        "--vae-size": st.one_of(st.integers(max_value=15), st.integers(min_value=4097)),
        "--vae-frames": st.one_of(st.integers(max_value=0), st.integers(min_value=1026)),
        "--frames": st.one_of(st.integers(max_value=0), st.integers(min_value=1026)),
        "--eval-every": st.integers(max_value=-1), "--warmup": st.integers(max_value=-1),
        "--checkpoint-every": st.integers(max_value=0), "--token-budget": st.integers(max_value=-1),
        "--decoder-refine-blocks": st.one_of(st.integers(max_value=-1), st.integers(min_value=65)),
        "--out": st.sampled_from(["file", "under_file", "nul"]),
        "--vae": st.sampled_from(["missing", "folder"]), "--init-from": st.sampled_from(["missing", "folder"]),
        "--data": st.sampled_from(["missing", "file"]), "--preset": st.sampled_from(["huge", ""]),
    }  # fmt: skip
    broken = draw(st.sets(st.sampled_from(sorted(bad)), min_size=1, max_size=3))
    (folder / "file").write_bytes(b"x")
    paths = {"file": str(folder / "file"), "under_file": str(folder / "file" / "run"), "nul": "r\x00un",
             "missing": str(folder / "missing.safetensors"), "folder": str(folder)}  # fmt: skip
    argv = ["train", stage, "--preset", "tiny", "--out", str(folder / "run")]
    for name, value in good.items():
        if name not in broken:
            argv.append(f"{name}={value}")
    for name in sorted(broken):
        value = draw(bad[name])
        argv.append(f"{name}={paths.get(value, value) if isinstance(value, str) else value}")
    return argv


@pytest.mark.filterwarnings("ignore")
@fuzz(TRAIN_N)
@given(data=st.data())
def test_train_refuses_bad_arguments_before_any_work(files, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        argv = data.draw(train_case(files, folder))
        before = sorted(p.name for p in folder.iterdir())
        run = run_cli(argv, folder / "home")
        assert_clean(run, {2})
        assert sorted(p.name for p in folder.iterdir()) == before, "train wrote something before refusing"


# -- prepare -----------------------------------------------------------------------------------------------


@st.composite
def prepare_case(draw, files, folder: Path):
    """A source folder of good and damaged files (or a bad source) and prepare's arguments."""
    src = folder / "src"
    src.mkdir()
    video = files["plain"].read_bytes()
    for i, kind in enumerate(draw(st.lists(st.sampled_from(
        ["good", "truncated", "flipped", "random", "empty", "png", "folder", "dangling", "loop"]
    ), max_size=4))):  # fmt: skip
        p = src / f"clip{i}.mp4"
        if kind == "good":
            p.write_bytes(video)
        elif kind == "truncated":
            p.write_bytes(truncated(video, draw(st.integers(0, len(video) - 1))))
        elif kind == "flipped":
            p.write_bytes(bit_flipped(video, draw(st.lists(st.integers(0, len(video) - 1), min_size=1, max_size=8))))
        elif kind == "random":
            p.write_bytes(draw(st.binary(max_size=4096)))
        elif kind == "empty":
            p.write_bytes(b"")
        elif kind == "png":
            shutil.copy(files["png"], p)
        elif kind == "folder":
            p.mkdir()
        elif kind == "dangling":
            p.symlink_to(folder / "gone.mp4")
        else:
            p.symlink_to(p)
    source = draw(st.sampled_from(["folder", "folder", "folder", "missing", "list", "glob", "file"]))
    if source == "list":
        (folder / "list.txt").write_text("\n".join(str(p) for p in sorted(src.iterdir())) + "\nmissing.mp4\n")
    where = {"folder": src, "missing": folder / "nothing", "list": folder / "list.txt", "glob": f"{src}/*.mp4",
             "file": src / "clip0.mp4"}  # fmt: skip
    argv = ["prepare", str(where[source]), "--out", str(folder / "out"), "--quiet", "--no-encode"]
    numbers = {
        "--workers": (st.just(1), st.integers(max_value=0)),
        "--min-s": (st.just(0.25), floats_outside(0, 3600)),
        "--max-s": (st.just(8.0), floats_outside(0, 3600, low_open=True)),
        "--max-blur": (st.just(0.55), FLOATS),
        "--frames": (st.just(17), st.integers(max_value=0)),
        "--fps": (st.just(8.0), floats_outside(0, 240, low_open=True)),
    }
    broken = broken_fields(draw, sorted(numbers), share_good=0.5)
    for name, (good, bad) in numbers.items():
        argv.append(f"{name}={draw(bad if name in broken else good)}")
    return argv


@pytest.mark.filterwarnings("ignore")
@fuzz(PREPARE_N)
@given(data=st.data())
def test_prepare_damaged_sources_and_arguments(files, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        argv = data.draw(prepare_case(files, folder))
        run = run_cli(argv, folder / "home")
        assert_clean(run, {0, 2})
        if run.rc == 0:
            summary = json.loads(run.out.strip().splitlines()[-1])
            assert summary["records"] == summary["kept"] + summary["rejected"]
