"""Bad input never crashes, misleads or destroys: one test per failure reported in issue 14.

Each drives the real CLI (`tessera.cli.main`, or `python -m tessera` in a subprocess where a
signal or a resource limit is involved) with the tiny checkpoint from conftest.py, and checks
the exit code, the one-line message, the files beside the output and the ledger.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from damage import with_config

from tessera.cli import main
from tessera.errors import EXIT_INPUT, EXIT_INTERNAL, EXIT_NOT_FOUND, EXIT_OK, EXIT_UNSAFE
from tessera.export import probe, write_mp4

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--steps", "1", "--width", "128", "--height", "128", "--duration-s", "0.5"]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def ledger(home: Path) -> list[dict]:
    """The ledger records under TESSERA_HOME `home`, oldest first (empty when nothing was recorded)."""
    import dataclasses

    from tessera.safety.ledger import LEDGER_FILE, Ledger

    path = home / LEDGER_FILE
    return [dataclasses.asdict(e.record) for e in Ledger(path).entries()] if path.exists() else []


def generate(ckpt, out, *extra: str) -> list[str]:
    return ["generate", "a red circle moving left", "-o", str(out), "--checkpoint", str(ckpt), *SMALL, *extra]


def refused(capsys, rc: int, *needles: str) -> str:
    """Assert a one-line refusal with exit code 2 that mentions every needle; returns the message."""
    err = capsys.readouterr().err
    assert rc == EXIT_INPUT, err
    lines = [line for line in err.splitlines() if line.startswith("tessera:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "generating" not in err, "refused only after the generation had started"
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "50.5"])
def test_non_finite_or_out_of_range_guidance_is_refused(value, tiny_checkpoint, tmp_path, home, capsys):
    out = tmp_path / "v.mp4"
    rc = main(generate(tiny_checkpoint, out, f"--guidance={value}"))
    refused(capsys, rc, "--guidance", "[0, 50]")
    assert not out.exists() and ledger(home) == []


@pytest.mark.parametrize("flag", ["--width", "--height", "--fps", "--duration-s"])
def test_zero_sizes_and_fps_are_refused_not_replaced_by_defaults(flag, tiny_checkpoint, tmp_path, home, capsys):
    out = tmp_path / "v.mp4"
    rc = main(generate(tiny_checkpoint, out, flag, "0"))
    refused(capsys, rc, flag)
    assert not out.exists() and ledger(home) == []


@pytest.mark.parametrize("seed", [str(2**64), "-1", str(10**40)])
def test_seed_beyond_64_bits_is_refused(seed, tiny_checkpoint, tmp_path, home, capsys):
    rc = main(generate(tiny_checkpoint, tmp_path / "v.mp4", f"--seed={seed}"))
    refused(capsys, rc, "--seed", str(2**64 - 1))


def test_largest_seed_generates_and_records_after_the_file(tiny_checkpoint, tmp_path, home, capsys):
    out = tmp_path / "v.mp4"
    assert main(generate(tiny_checkpoint, out, "--seed", str(2**64 - 1))) == EXIT_OK
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    records = ledger(home)
    assert [r["generation_id"] for r in records] == [printed["generation_id"]]
    assert records[0]["seed"] == 2**64 - 1 and probe(out)["frames"] == 5
    assert sorted(os.listdir(tmp_path)) == ["home", "v.mp4"]  # nothing else beside the output


def test_output_that_is_a_folder_is_refused_before_generation(tiny_checkpoint, tmp_path, home, capsys):
    out = tmp_path / "v.mp4"
    out.mkdir()
    rc = main(generate(tiny_checkpoint, out))
    refused(capsys, rc, "is an existing folder", str(out))
    assert out.is_dir() and os.listdir(out) == [] and ledger(home) == []


def test_output_that_is_a_device_is_refused(tiny_checkpoint, tmp_path, home, capsys):
    out = tmp_path / "v.mp4"
    out.symlink_to("/dev/full")
    rc = main(generate(tiny_checkpoint, out))
    refused(capsys, rc, "not a regular file")
    assert ledger(home) == []


@pytest.mark.parametrize(
    "name,config,needle",
    [
        ("notjson", "{'vae': nope", "not valid JSON"),
        ("list", "[1, 2, 3]", "not an object"),
        ("types", None, "config.dit.width should be an integer"),
        ("nested", None, "config.vae should be a JSON object"),
        ("encoder", None, "text encoder"),
    ],
)
def test_damaged_checkpoint_config_is_bad_input_naming_the_file(
    name, config, needle, tiny_checkpoint, tmp_path, home, capsys
):
    edits = {
        "types": lambda c: c["dit"].update(width="64"),
        "nested": lambda c: c.update(vae=[16]),
        "encoder": lambda c: c.update(text={"kind": "hf", "path": str(tmp_path / "no-such-encoder")}),
    }
    bad = with_config(tiny_checkpoint, tmp_path / f"{name}.safetensors", config, edit=edits.get(name))
    rc = main(generate(bad, tmp_path / "v.mp4"))
    refused(capsys, rc, str(bad), needle)
    assert not (tmp_path / "v.mp4").exists() and ledger(home) == []


def test_checkpoint_with_nan_weights_is_refused(tiny_checkpoint, tmp_path, home, capsys):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tiny_checkpoint))
    with safe_open(str(tiny_checkpoint), framework="pt") as f:
        meta = f.metadata()
    name = sorted(k for k in tensors if k.startswith("dit."))[0]
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    bad = tmp_path / "nan.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    rc = main(generate(bad, tmp_path / "v.mp4"))
    refused(capsys, rc, str(bad), "NaN or infinite", name)


def test_argparse_errors_and_help_are_exit_codes_not_exceptions(capsys):
    assert main(["generate"]) == EXIT_INPUT  # the prompt is missing
    assert main(["generate", "x", "--steps", "many"]) == EXIT_INPUT
    assert main(["--help"]) == EXIT_OK
    assert "Traceback" not in capsys.readouterr().err


def test_unexpected_error_is_one_line_with_a_hint_and_exit_4(monkeypatch, capsys):
    from tessera.cli import verify

    def broken(args):
        raise RuntimeError("something inside broke\nwith a second line")

    monkeypatch.setattr(verify, "cmd_verify", broken)
    monkeypatch.delenv("TESSERA_DEBUG", raising=False)
    assert main(["verify", "x.mp4"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "internal error: RuntimeError: something inside broke with a second line" in err and "report" in err
    monkeypatch.setenv("TESSERA_DEBUG", "1")
    assert main(["verify", "x.mp4"]) == EXIT_INTERNAL
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("failure", ["torch", "python"])
def test_running_out_of_memory_is_one_line_saying_what_to_ask_for_and_exit_2(failure, monkeypatch, capsys):
    import torch

    from tessera.cli import verify

    def too_large(args):
        if failure == "torch":
            torch.empty(10**15, dtype=torch.uint8)  # a real allocation failure of torch's CPU allocator
        raise MemoryError()

    monkeypatch.setattr(verify, "cmd_verify", too_large)
    monkeypatch.delenv("TESSERA_DEBUG", raising=False)
    assert main(["verify", "x.mp4"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "out of memory" in err and "--duration-s" in err
    assert "internal error" not in err and "report" not in err


def test_a_full_disk_is_one_line_naming_the_file_and_exit_2(monkeypatch, capsys):
    from tessera.cli import verify

    def write_to_a_full_disk(args):
        with open("/dev/full", "w") as f:  # a real ENOSPC from the kernel
            f.write("x")

    monkeypatch.setattr(verify, "cmd_verify", write_to_a_full_disk)
    monkeypatch.delenv("TESSERA_DEBUG", raising=False)
    assert main(["verify", "x.mp4"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no space left" in err and "internal error" not in err


def test_readme_documents_every_exit_code():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Exit codes") :].split("\n## ")[0]
    for code, word in ((EXIT_OK, "success"), (EXIT_NOT_FOUND, "verify"), (EXIT_INPUT, "bad input")):
        assert f"| {code} |" in section and word in section
    assert f"| {EXIT_UNSAFE} |" in section and f"| {EXIT_INTERNAL} |" in section and "TESSERA_DEBUG" in section


# -- writes: all or nothing, and the ledger record only after the file ----------------------------


def test_record_callback_runs_after_the_file_is_in_place_and_a_failure_removes_it(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    seen = []
    write_mp4(frames, tmp_path / "a.mp4", fps=8, on_written=lambda p: seen.append(probe(p)["frames"]))
    assert seen == [5]

    def failing(path):
        raise OSError("ledger unavailable")

    with pytest.raises(OSError, match="ledger unavailable"):
        write_mp4(frames, tmp_path / "b.mp4", fps=8, on_written=failing)
    assert sorted(os.listdir(tmp_path)) == ["a.mp4"]


WRITER = """
import signal, sys, numpy as np
import tessera.export as export
from tessera.cli import Terminated, _on_sigterm
if sys.argv[2] == "named":  # the fallback without O_TMPFILE
    export._anonymous_file = lambda folder: None
signal.signal(signal.SIGTERM, _on_sigterm)
frames = np.random.default_rng(0).integers(0, 255, (400, 256, 256, 3), dtype=np.uint8)
print("encoding", flush=True)
try:
    export.write_mp4(frames, sys.argv[1], fps=8)
except Terminated:
    sys.exit(143)
"""


@pytest.mark.parametrize(
    "sig,mode",
    [(signal.SIGKILL, "anonymous"), (signal.SIGTERM, "anonymous"), (signal.SIGINT, "anonymous")]
    + [(signal.SIGTERM, "named"), (signal.SIGINT, "named")],
)
def test_a_kill_during_encoding_leaves_nothing_at_or_beside_the_output(sig, mode, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder / "v.mp4"), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout.readline().strip() == b"encoding"
    time.sleep(0.7)
    assert proc.poll() is None, "the encoding finished before the signal; make the clip longer"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert os.listdir(folder) == []
    assert b"Traceback" not in proc.stderr.read() or sig == signal.SIGINT


@pytest.mark.parametrize("mode", ["anonymous", "named"])
def test_an_interrupt_raised_while_the_encoder_writes_is_never_swallowed(mode, tmp_path, monkeypatch):
    """A Ctrl-C or SIGTERM handler raising during any write of the encode stops it.

    The encoder once wrote through a Python file object; PyAV's write callback swallowed a
    KeyboardInterrupt raised there and the file was finished anyway (a SIGTERM ignored in CI).
    Every Python-level file write made during the encode raises here, as a signal landing in it would.
    """
    import builtins
    import io

    import tessera.export as export

    if mode == "named":
        monkeypatch.setattr(export, "_anonymous_file", lambda folder: None)
    raised = []

    class Interrupting(io.FileIO):
        def write(self, data):
            raised.append(len(data))
            raise KeyboardInterrupt

    def interrupting_fdopen(fd, mode="r", *args, closefd=True, **kwargs):
        return Interrupting(fd, "r+", closefd=closefd)

    real_open = builtins.open

    def interrupting_open(file, mode="r", *args, **kwargs):
        if (
            isinstance(file, (str, os.PathLike))
            and str(tmp_path) in os.fspath(file)
            and "b" in mode
            and "r" not in mode
        ):
            return Interrupting(file, "w+")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", interrupting_fdopen)
    monkeypatch.setattr(builtins, "open", interrupting_open)
    frames = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    try:
        write_mp4(frames, tmp_path / "a.mp4", fps=8)
    except KeyboardInterrupt:
        assert raised and os.listdir(tmp_path) == []
    else:
        assert not raised, "an interrupt raised inside a write was swallowed and the file finished anyway"
        assert probe(tmp_path / "a.mp4")["frames"] == 3


FSIZE_LIMIT = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
"""


def test_a_write_that_fails_midway_leaves_nothing_and_says_so(tmp_path):
    """A file-size limit stands in for a full disk."""
    code = FSIZE_LIMIT + textwrap.dedent(
        """
        import sys, numpy as np
        from tessera.errors import InputError
        from tessera.export import write_mp4
        frames = np.random.default_rng(0).integers(0, 255, (9, 128, 128, 3), dtype=np.uint8)
        try:
            write_mp4(frames, sys.argv[1], fps=8, on_written=lambda p: print("recorded"))
        except InputError as e:
            print(e)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "v.mp4")], capture_output=True, text=True, env=env)
    assert "nothing was written" in run.stdout and "recorded" not in run.stdout, run.stdout + run.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_a_generation_whose_write_fails_leaves_no_file_and_no_record(tiny_checkpoint, tmp_path):
    code = FSIZE_LIMIT + "import sys\nfrom tessera.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    out = tmp_path / "out" / "v.mp4"
    out.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TESSERA_HOME": str(tmp_path / "home")}
    run = subprocess.run(
        [sys.executable, "-c", code, *generate(tiny_checkpoint, out)], capture_output=True, text=True, env=env
    )
    assert run.returncode == EXIT_INPUT, run.stderr
    assert "generating" in run.stderr and "nothing was written" in run.stderr and "Traceback" not in run.stderr
    assert os.listdir(out.parent) == [] and ledger(tmp_path / "home") == []


def test_eval_json_leaves_only_the_final_file(tiny_checkpoint, tmp_path, capsys):
    """The partial file a long eval writes as it goes is gone once the whole result is in place."""
    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(tiny_checkpoint), "--prompts", "2", "--batch", "2", "--json", str(out)]
    assert main([*argv, "--steps", "1", "--width", "128", "--height", "128", "--duration-s", "0.5"]) == 0
    assert len(json.loads(out.read_text())["cases"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]
