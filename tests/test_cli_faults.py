"""What a new user hit: bad numbers, unwritable output folders, mismatched weights — each one line."""

import errno
from pathlib import Path

import pytest
import torch

from fgvc.cli import main
from tests.tiny import tiny_synth_args, tiny_train_args


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_faults") / "data"
    assert main(tiny_synth_args(root)) == 0
    return root


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli_faults_run") / "run"
    assert main(_train(data, out, "--no-report")) == 0
    return out


def _train(data: Path, out: Path, *extra: str) -> list[str]:
    return tiny_train_args(data, out, *extra, report=True, sets={"train.epochs": 1, "train.batch_size": 4})


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fgvc: error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("train.epochs", "0", "train.epochs = 0 is out of range: it must be at least 1"),
    ("train.epochs", "-1", "train.epochs = -1 is out of range: it must be at least 1"),
    ("model.input_size", "0", "model.input_size = 0 is out of range: it must be between 32 and 4096"),
    ("model.input_size", "-5", "model.input_size = -5 is out of range"),
    ("optim.lr", "0", "optim.lr = 0.0 is out of range: it must be greater than 0"),
    ("data.val_fraction", "1.5", "data.val_fraction = 1.5 is out of range: it must be a fraction in [0, 1)"),
    ("train.amp", "bf17", "train.amp = 'bf17': choose one of auto, fast, off, bf16, fp16. Did you mean 'bf16'?"),
])
def test_bad_config_numbers_are_one_line_naming_key_value_and_range(data, tmp_path, capsys, key, value, expected):
    assert main(_train(data, tmp_path / "run", "--set", f"{key}={value}")) == 2
    assert expected in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.parametrize("argv", [
    ["evaluate", "RUN", "--data", "DATA", "--batch-size", "0"],
    ["predict", "RUN", "--data", "DATA", "--out", "OUT", "--group", "g", "--batch-size", "-3"],
    ["data", "synth", "OUT", "--classes", "0"],
])
def test_bad_command_line_numbers_are_refused(run, data, tmp_path, capsys, argv):
    argv = [str(run) if a == "RUN" else str(data) if a == "DATA" else str(tmp_path / "o") if a == "OUT" else a
            for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "out of range: it must be at least 1" in capsys.readouterr().err


def test_output_folder_behind_a_file_is_one_line_for_every_command(run, data, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "sub"
    image = str(sorted((data / "test").glob("*.jpg"))[0])
    commands = {
        "train": _train(data, out),
        "predict": ["predict", str(run), "--data", str(data), "--out", str(out), "--group", "g", "--device", "cpu",
                    "--no-progress"],
        "synth": ["data", "synth", str(out), "--classes", "2", "--per-class", "2", "--size", "64"],
        "explain": ["explain", str(run), image, "--out", str(out), "--device", "cpu"],
        "report": ["report", str(run), "--out", str(out / "r.html"), "--device", "cpu", "--no-progress"],
    }
    for name, argv in commands.items():
        assert main(argv) == 2, name
        err = _one_line_error(capsys)
        assert str(blocker) in err and ("a file is in the way" in err or "not a folder" in err.lower()), (name, err)


def test_permission_denied_while_writing_is_one_line(run, data, tmp_path, capsys, monkeypatch):
    # tests run as root, where chmod does not stop a write: the refusal is injected where files are opened
    import fgvc.fileio

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(fgvc.fileio.os, "open", denied)
    assert main(["predict", str(run), "--data", str(data), "--out", str(tmp_path / "p"), "--group", "g",
                 "--device", "cpu", "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert "permission denied" in err and str(tmp_path / "p") in err


def test_resume_with_weights_of_another_backbone_is_one_line(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    state = torch.load(copy / "last.pt", weights_only=True)
    state["config"]["model"]["backbone"] = "resnet34"  # the config says resnet34, the weights are resnet18
    torch.save(state, copy / "last.pt")
    assert main(["train", "--resume", str(copy), "--set", "train.epochs=2", "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert f"the weights in {copy / 'last.pt'} do not fit a baseline/resnet34 model" in err


def test_train_on_a_folder_with_errors_lists_every_problem_at_once(tmp_path, capsys):
    root = tmp_path / "data"
    assert main(tiny_synth_args(root)) == 0
    classes = sorted(p for p in (root / "train").iterdir() if p.is_dir())
    classes[0].rename(root / "train" / "no_number_here")  # a folder-level error
    victim = sorted(classes[1].glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # an image-level error only decoding finds
    capsys.readouterr()
    assert main(_train(root, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "no_number_here" in err and victim.name in err


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_output_file_gets_the_mode_the_umask_gives(data, tmp_path, umask):
    import os
    import stat

    previous = os.umask(umask)
    try:
        run, pred = tmp_path / "run", tmp_path / "pred"
        assert main(_train(data, run)) == 0
        assert main(["predict", str(run), "--data", str(data), "--out", str(pred), "--group", "g", "--device", "cpu",
                     "--no-progress"]) == 0
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    files = [run / n for n in ("last.pt", "best.pt", "config.yaml", "classes.json", "split.json", "metrics.csv",
                               "report.html")] + [run / "eval_val" / "metrics.json", pred / "predictions.csv",
                                                  pred / "submission.json"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == expected, f"{path.name}: {oct(path.stat().st_mode)}"
