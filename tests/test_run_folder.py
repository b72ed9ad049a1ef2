"""A resumable command's --out folder holds one run: the same settings resume it, other ones are refused."""

import dataclasses
import json
import math
import os

import pytest

from tessera.data.ingest.prepare import PrepareConfig, _open_dataset
from tessera.distill import StudentConfig
from tessera.errors import InputError
from tessera.prefer import PreferenceConfig
from tessera.run_folder import claim


def test_the_same_settings_resume_and_other_ones_are_refused_naming_what_differs(tmp_path):
    settings = {"seed": 0, "lr": 1e-5, "sides": (256, 256), "save_every": 50, "model_sha256": "ab" * 32}
    claim(tmp_path, "run.json", settings, free=("save_every",))
    claim(tmp_path, "run.json", settings, free=("save_every",))  # a re-run: tuples read back as lists
    claim(tmp_path, "run.json", {**settings, "save_every": 10}, free=("save_every",))  # free keys may change
    assert json.loads((tmp_path / "run.json").read_text())["save_every"] == 50  # the first run's record stays
    with pytest.raises(InputError, match=r"other settings \(seed 0 -> 1\).*same arguments.*new --out"):
        claim(tmp_path, "run.json", {**settings, "seed": 1})
    with pytest.raises(InputError, match="model_sha256"):
        claim(tmp_path, "run.json", {**settings, "model_sha256": "cd" * 32})
    with pytest.raises(InputError, match="extra"):
        claim(tmp_path, "run.json", {**settings, "extra": True})
    (tmp_path / "run.json").write_text("[1, 2")
    with pytest.raises(InputError, match="not readable JSON"):
        claim(tmp_path, "run.json", settings)
    (tmp_path / "run.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not an object"):
        claim(tmp_path, "run.json", settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # no temporary left beside it


def test_prepare_refuses_a_dataset_folder_made_with_other_settings(tmp_path):
    _open_dataset(tmp_path, PrepareConfig(encode=False))
    _open_dataset(tmp_path, PrepareConfig(encode=False))
    with pytest.raises(InputError, match="other settings.*encode false -> true"):
        _open_dataset(tmp_path, PrepareConfig(encode=True))


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ({"seed": -1}, "--seed -1"),
        ({"seed": 2**64}, "--seed"),
        ({"duration_s": math.nan}, "--duration-s nan"),
        ({"duration_s": 0.0}, "--duration-s 0.0"),
        ({"duration_s": math.inf}, "--duration-s inf"),
        ({"height_px": 100}, "--height 100 must be a multiple of 32"),
        ({"width_px": 4096}, "--width 4096"),
        ({"width_px": 64}, "--width 64"),
        ({"guidance": math.nan}, "--guidance nan"),
        ({"guidance": 0.0}, "--guidance 0.0"),
        ({"lr": -1e-5}, "--lr"),
        ({"prompts": 0}, "--prompts 0"),
        ({"train_steps": 0}, "--train-steps 0"),
        ({"steps": 0}, "--steps 0"),
        ({"samples": 1}, "at least 2 clips"),
        ({"samples": 10_000}, "--samples 10000"),
        ({"min_gap": -5.0}, "--min-gap -5.0"),
        ({"min_gap": 0.0}, "--min-gap 0"),
        ({"min_gap": math.nan}, "--min-gap nan"),
        ({"temporal_weight": math.nan}, "--temporal-weight nan"),
        ({"temporal_weight": -1.0}, "--temporal-weight -1.0"),
        ({"beta": 0.0}, "--beta 0"),
        ({"wording": "poetry"}, "--wording 'poetry'"),
    ],
)
def test_preference_settings_that_cannot_run_are_refused_naming_the_flag(change, flag):
    with pytest.raises(InputError) as e:
        PreferenceConfig(**change)
    assert flag in str(e.value), str(e.value)


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ({"seed": -1}, "--seed -1"),
        ({"duration_s": math.nan}, "--duration-s nan"),
        ({"guidance": math.nan}, "--guidance nan"),
        ({"guidance": -4.0}, "--guidance -4.0"),
        ({"lr": math.inf}, "--distill-lr inf"),
        ({"steps": 0}, "--distill-steps 0"),
        ({"batch": 0}, "--distill-batch 0"),
        ({"pairs": 0}, "--pairs 0"),
        ({"own_states": math.nan}, "--own-states nan"),
        ({"ema": 1.5}, "--ema 1.5"),
        ({"method": "magic"}, "--method 'magic'"),
        ({"student_steps": 20}, "--student-steps 20"),
        ({"teacher_steps": 0}, "--teacher-steps 0"),
        ({"height_px": 127}, "--height 127"),
    ],
)
def test_student_settings_that_cannot_run_are_refused_naming_the_flag(change, flag):
    with pytest.raises(InputError) as e:
        StudentConfig(**change)
    assert flag in str(e.value), str(e.value)


def test_default_settings_are_valid_and_replace_checks_again():
    pc, sc = PreferenceConfig(), StudentConfig()
    assert dataclasses.replace(pc, seed=2**64 - 1).seed == 2**64 - 1
    with pytest.raises(InputError, match="--seed"):
        dataclasses.replace(sc, seed=-3)


def test_a_second_run_in_the_same_folder_is_refused_and_a_killed_one_frees_it(tmp_path, monkeypatch, capsys):
    import signal
    import subprocess
    import sys
    import time

    from tessera.cli import main
    from tessera.run_folder import LOCK, exclusive

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from tessera.run_folder import exclusive\nimport time\n"
         f"with exclusive({str(out)!r}, 'prefer'):\n    print('held', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    try:
        assert main(["prefer", "--out", str(out), "--prompts", "1"]) == 2
        err = capsys.readouterr().err
        assert f"another tessera prefer is running in {out} (pid {holder.pid})" in err
        monkeypatch.setenv("RANK", "1")  # a second process of one distributed run shares the folder
        with exclusive(out, "train"):
            pass
        monkeypatch.delenv("RANK")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    time.sleep(0.05)
    with exclusive(out, "prefer"):  # the kernel freed the lock with the killed process
        assert (out / LOCK).read_text() == f"pid {os.getpid()}\n"
