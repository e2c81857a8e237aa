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
from tests.tiny import tiny_synth_args, tiny_train_args


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
    import fgvc.cli.data

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a worker's pipe, while stdout is fine

    monkeypatch.setattr(fgvc.cli.data, "_data_synth", broken)
    assert main(["data", "synth", "x"]) == 1
    assert "internal error: this is a bug" in capsys.readouterr().err


# -- a tiny trained run (3 classes, 64 px, resnet18 from scratch: seconds on a CPU) --------------------------
def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return tiny_train_args(data, out, *extra, sets={"train.batch_size": 4, "data.val_fraction": 0.25})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("first_try") / "data"
    assert main(tiny_synth_args(root, per_class=5)) == 0
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


# -- a failed start leaves nothing behind; a saved split must fit the config and the data --------------------
@pytest.mark.parametrize(("mistake", "expected"), [
    (["--set", "model.backbone=resnet1B"], "resnet1B"),
    (["--init-from", "nosuch/best.pt"], "nosuch/best.pt"),
])
def test_a_failed_start_leaves_no_run_folder_and_a_retry_carves_its_own_split(data, tmp_path, capsys, mistake,
                                                                             expected):
    from fgvc.data.formats import read_dataset
    from fgvc.data.split import stratified_split

    out = tmp_path / "run"
    assert main(_train_args(data, out, "--set", "train.epochs=1", *mistake)) == 2
    assert expected in _one_line_error(capsys)
    assert not out.exists()  # before: .lock and a split.json of data.val_fraction=0.25
    assert main(_train_args(data, out, "--set", "train.epochs=1", "--set", "data.val_fraction=0.5")) == 0
    saved = json.loads((out / "split.json").read_text())
    expected_val = stratified_split(read_dataset(data).split("train"), 0.5, 0)[1]
    assert (saved["val_fraction"], sorted(saved["val"])) == (0.5, sorted(expected_val))
    assert len(saved["val"]) == 6  # 2 of each class's 4 training images


def test_a_failed_start_in_a_folder_that_existed_takes_out_only_what_it_wrote(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(_train_args(data, out, "--set", "model.backbone=resnet1B")) == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_split_left_by_a_killed_start_is_refused_when_the_config_differs(data, tmp_path, capsys):
    from fgvc.data.formats import read_dataset
    from fgvc.data.split import save_split, stratified_split

    out = tmp_path / "run"
    out.mkdir()  # what a start killed (SIGKILL: no cleanup runs) after carving its split leaves
    save_split(out / "split.json", stratified_split(read_dataset(data).split("train"), 0.25, 0)[1], 0, 0.25)
    assert main(_train_args(data, out, "--set", "data.val_fraction=0.5")) == 2
    assert _one_line_error(capsys) == (
        f"fgvc: error: {out / 'split.json'} was carved with data.val_fraction=0.25, data.split_seed=0, but this run "
        f"has data.val_fraction=0.5, data.split_seed=0: delete {out / 'split.json'} to carve the split anew (no "
        "epoch was saved beside it: it is left by a start that did not finish), or pass another --out\n")
    assert main(_train_args(data, out, "--set", "data.split_seed=1")) == 2
    assert "data.split_seed=0, but this run has data.val_fraction=0.25, data.split_seed=1" in _one_line_error(capsys)


def test_a_saved_split_of_other_images_is_refused(data, tmp_path):
    from fgvc.data.formats import read_dataset
    from fgvc.data.split import load_saved_split, save_split, stratified_split
    from fgvc.errors import DataError

    train = read_dataset(data).split("train")
    val = stratified_split(train, 0.25, 0)[1]
    save_split(tmp_path / "split.json", val, 0, 0.25)
    assert load_saved_split(tmp_path / "split.json", train, 0.25, 0) == val  # the same split: used as it is
    fewer = train.with_samples(s for s in train.samples if s.image_id != val[0])  # one class lost an image
    with pytest.raises(DataError, match=r"carved from other training images than those in .* \(\d+ validation "
                                        r"image\(s\) differ: "):
        load_saved_split(tmp_path / "split.json", fewer, 0.25, 0)


# -- changed data is the user's to fix, not a bug ----------------------------------------------------------
@pytest.fixture
def data_without_a_val_image(run, data, tmp_path) -> tuple[Path, str]:
    copy = tmp_path / "data_copy"
    shutil.copytree(data, copy)
    gone = sorted(json.loads((run / "split.json").read_text())["val"])[0]
    victims = list((copy / "train").rglob(gone)) or list((copy / "train").rglob(f"{gone}.*"))
    assert len(victims) == 1, gone
    victims[0].unlink()
    return copy, gone


@pytest.mark.parametrize("command", ["resume", "evaluate"])
def test_data_without_a_validation_image_is_one_line_naming_it(run, data_without_a_val_image, capsys, command):
    copy, gone = data_without_a_val_image
    argv = (["train", "--resume", str(run), "--data", str(copy), "--set", "train.epochs=3", "--no-progress"]
            if command == "resume" else
            ["evaluate", str(run), "--data", str(copy), "--device", "cpu", "--no-progress", "--no-report"])
    capsys.readouterr()
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert "1 validation image(s) of " in err and f"are not in the training data in {copy}: {gone};" in err
    assert "restore those images" in err


def test_resume_of_a_finished_run_counts_the_epochs_done(run, capsys):
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--set", "train.epochs=1", "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"{run} has finished 2 epochs, more than train.epochs=1; to train longer, resume with --set train.epochs=N "
        "(N > 2)")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"{run} has finished all 2 epochs; to train longer, resume with --set train.epochs=N (N > 2)")
