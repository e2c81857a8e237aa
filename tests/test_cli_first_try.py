"""What a newcomer types first, command by command: each mistake or habit gets a clear answer, not a bug report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fgvc.cli import EXIT_STDOUT_CLOSED, main


def _fgvc_into_closed_pipe(*argv: str) -> subprocess.CompletedProcess:
    """``fgvc ARGV | head -0``, made deterministic: the reader has closed its end before fgvc writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "fgvc", *argv], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write_end)


def test_a_closed_stdout_is_a_quiet_exit_141_and_the_team_is_still_added(tmp_path):
    pytest.importorskip("sqlalchemy", reason="the server extra is not installed: pip install 'fgvc[server]'")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class_id\n" + "".join(f"img{i}.jpg,{i % 2 + 1}\n" for i in range(10)))
    comp = tmp_path / "comp"
    assert main(["server", "init", str(comp), "--labels", str(labels)]) == 0
    result = _fgvc_into_closed_pipe("server", "team", "add", str(comp), "alpha")
    assert (result.returncode, result.stderr) == (EXIT_STDOUT_CLOSED, "")
    listed = subprocess.run([sys.executable, "-m", "fgvc", "server", "team", "list", str(comp)], capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0 and "alpha " in listed.stdout


def test_a_closed_stdout_is_quiet_for_the_core_commands_too(tmp_path):
    result = _fgvc_into_closed_pipe("data", "synth", str(tmp_path / "d"), "--classes", "2", "--per-class", "2",
                                    "--size", "32")
    assert (result.returncode, result.stderr) == (EXIT_STDOUT_CLOSED, "")
    assert len(list((tmp_path / "d").rglob("*.jpg"))) == 4  # the command did its work: 2 classes x 2


def test_another_broken_pipe_is_still_a_bug(monkeypatch, capsys):
    import fgvc.cli

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a worker's pipe, while stdout is fine

    monkeypatch.setattr(fgvc.cli, "_data_synth", broken)
    assert main(["data", "synth", "x"]) == 1
    assert "internal error: this is a bug" in capsys.readouterr().err


# -- a tiny trained run (3 classes, 64 px, resnet18 from scratch: seconds on a CPU) --------------------------
def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", "demo", "--data", str(data), "--out", str(out), "--no-progress", "--no-report",
            "--set", "model.input_size=64", "--set", "data.num_workers=0", "--set", "train.device=cpu",
            "--set", "train.batch_size=4", "--set", "data.val_fraction=0.25", *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("first_try") / "data"
    assert main(["data", "synth", str(root), "--classes", "3", "--per-class", "5", "--size", "64"]) == 0
    return root


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """Finished after 2 epochs."""
    out = tmp_path_factory.mktemp("first_try_run") / "run"
    assert main(_train_args(data, out, "--set", "train.epochs=2")) == 0
    return out


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fgvc: error: ") and "Traceback" not in err, err
    return err


def test_predict_on_a_plain_folder_of_photos_needs_no_group(run, data, tmp_path, capsys):
    photos = tmp_path / "holiday"
    photos.mkdir()
    for i, image in enumerate(sorted((data / "test").glob("*.jpg"))[:2]):
        shutil.copy(image, photos / f"IMG_{i:04d}.jpg")
    capsys.readouterr()
    assert main(["predict", str(run), "--data", str(photos), "--out", str(tmp_path / "p"), "--device", "cpu",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [f"wrote {tmp_path / 'p' / 'predictions.csv'}",
                       "no --group given, so no submission.json (a competition's file); pass --group NAME to write one"]
    rows = (tmp_path / "p" / "predictions.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["file", "IMG_0000.jpg", "IMG_0001.jpg"]
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["predictions.csv"]
    # with --group, the competition's file as before
    assert main(["predict", str(run), "--data", str(photos), "--out", str(tmp_path / "g"), "--group", "wrens",
                 "--device", "cpu", "--no-progress"]) == 0
    assert "no --group" not in capsys.readouterr().out
    assert json.loads((tmp_path / "g" / "submission.json").read_text())["groupname"] == "wrens"
