"""What a new user meets, command by command: help that names every choice and default, and errors that
say what was wrong and what the command takes (issue 18, "Weaker, each worth one line of fix")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fgvc.competition.submission
from fgvc.cli import main
from fgvc.data.classes import ClassTable, ClassTableError
from fgvc.data.formats import format_names
from fgvc.data.labels_csv import LabelsFileError, read_labels_csv
from tests.tiny import tiny_synth_args, tiny_train_args


def _error(capsys) -> str:
    """The one `fgvc: error:` line on stderr, without its prefix (and nothing on stdout)."""
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fgvc: error: "), captured.err
    return lines[0].removeprefix("fgvc: error: ")


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal's width


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny trained run and its data (3 classes, 4 images each, 64 px, one epoch on the CPU)."""
    tmp = tmp_path_factory.mktemp("trained")
    root, run = tmp / "data", tmp / "run"
    assert main(tiny_synth_args(root)) == 0
    assert main(tiny_train_args(root, run, sets={"train.epochs": 1})) == 0
    return root, run


# -- help ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "expected"), [
    (["evaluate"], "(default val)"),
    (["export"], "file format (default onnx)"),
    (["serve"], "port to listen on (default 8000)"),
    (["serve"], "(1: no dynamic batching; default 16)"),
    (["server", "run"], "port to listen on (default 8000)"),
    (["server", "init"], "submissions per team per UTC day (0: no limit; default 5)"),
    (["submit"], "extra attempts after a connection error, timeout or HTTP 5xx (default 3)"),
    (["data", "synth"], "--per-class PER_CLASS images per class, train and test together (default 40); the test "
                        "split takes round(N x --test-fraction) of them, e.g. 8 gives 6 train + 2 test"),
    (["data", "synth"], "--test-fraction TEST_FRACTION share of each class's images in the test split (default 0.2)"),
    (["data", "check"], "exit 0 usable, 1 problems found, 2 nothing to check (e.g. no such folder)"),
])
def test_help_names_the_default(argv, expected, capsys):
    assert expected in _help(argv, capsys)


def test_data_check_help_names_every_format(capsys):
    text = _help(["data", "check"], capsys)
    listed = text.split("--format FORMAT ", 1)[1].split(" (default: detect)", 1)[0]
    assert sorted(listed.split(", ")) == sorted(format_names())  # imagelist included


def test_data_synth_per_class_8_is_6_train_and_2_test(tmp_path, capsys):
    """What the --per-class help promises."""
    assert main(["data", "synth", str(tmp_path / "d"), "--classes", "2", "--per-class", "8", "--size", "32"]) == 0
    assert "wrote 2 classes, 12 train and 4 test images" in capsys.readouterr().out


# -- data check ---------------------------------------------------------------------------------------
def test_data_check_of_a_missing_folder_exits_2_and_says_it_as_json_with_json(tmp_path, capsys):
    missing = tmp_path / "nosuch"
    assert main(["data", "check", str(missing)]) == 2
    assert capsys.readouterr().err.startswith(f"fgvc: error: {missing}: data folder not found (the path does not "
                                              "exist)\n")
    assert main(["data", "check", str(missing), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.err == ""
    assert json.loads(captured.out) == {
        "root": str(missing), "usable": False,
        "error": f"{missing}: data folder not found (the path does not exist)\nFix: check the dataset path; it must "
                 "be the folder that holds the images and annotation files"}


def test_data_check_of_an_empty_folder_says_its_path_once(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "check", str(empty)]) == 1
    assert f"  [error] layout: {empty}: no known dataset layout recognised\n" in capsys.readouterr().out


# -- train --resume -----------------------------------------------------------------------------------
def test_a_typo_in_a_resume_override_is_an_unknown_key_spelled_in_full(trained, capsys):
    _, run = trained
    assert main(["train", "--resume", str(run), "--set", "train.epoch=5"]) == 2
    assert _error(capsys) == "unknown config key 'train.epoch'. Did you mean 'train.epochs'?"


def test_config_key_suggestions_are_full_keys(capsys):
    assert main(["train", "--data", "x", "--set", "optim.lrr=0.1"]) == 2
    assert _error(capsys) == "unknown config key 'optim.lrr'. Did you mean 'optim.lr'?"


@pytest.mark.parametrize(("given", "expected"), [
    ("nosuch", "cannot resume: {path} does not exist; pass the folder `fgvc train --out` wrote (default runs/<name>)"),
    ("file", "cannot resume: {path} is a file; --resume takes the run folder ({parent})"),
])
def test_resume_of_something_that_is_not_a_run_folder_says_so(tmp_path, capsys, given, expected):
    path = tmp_path / given
    if given == "file":
        path.write_bytes(b"")
    assert main(["train", "--resume", str(path)]) == 2
    assert _error(capsys) == expected.format(path=path, parent=tmp_path)


# -- predict, report, explain: what each command takes ------------------------------------------------
@pytest.mark.parametrize(("command", "expected"), [
    (["predict", "{run}", "--data", "{tmp}/nosuch", "--out", "{tmp}/p", "--group", "g", "--device", "cpu"],
     "--data {tmp}/nosuch does not exist; pass a dataset with a test/ folder, or a folder of images"),
    (["predict", "{run}", "--data", "{root}/test_labels.csv", "--out", "{tmp}/p", "--group", "g", "--device", "cpu"],
     "--data {root}/test_labels.csv is a file, not a folder; pass a dataset with a test/ folder, or a folder of "
     "images"),
    (["report", "{run}/best.pt"], "{run}/best.pt is a file; fgvc report takes the run folder that holds it: "
                                  "`fgvc report {run}`"),
    (["explain", "{run}", "{root}/test_labels.csv", "--out", "{tmp}/x", "--device", "cpu"],
     "{root}/test_labels.csv: not a readable image (unknown or corrupt header); fgvc explain takes image files "
     "(.jpg, .png and the other usual formats) or folders of them"),
])
def test_a_wrong_input_says_what_the_command_takes(trained, tmp_path, capsys, command, expected):
    root, run = trained
    names = {"run": run, "root": root, "tmp": tmp_path}
    capsys.readouterr()
    assert main([part.format(**names) for part in command]) == 2
    assert _error(capsys) == expected.format(**names)
    assert not (tmp_path / "p").exists() and not (tmp_path / "x").exists()


# -- class tables -------------------------------------------------------------------------------------
def test_a_class_table_difference_names_both_tables():
    run = ClassTable(("01", "02", "03"), ("a", "b", "c"))
    data = ClassTable(("01", "04"), ("a", "d"))
    with pytest.raises(ClassTableError) as e:
        run.require_same(data, "the data in ROOT")
    assert str(e.value) == ("class table of the data in ROOT differs from the run's:\n"
                            "2 class(es) only in the run: 02, 03\n1 class(es) only in the data in ROOT: 04")


def test_predict_on_a_dataset_of_other_classes_names_the_run_and_the_data(trained, tmp_path, capsys):
    _, run = trained
    other = tmp_path / "other"
    assert main(["data", "synth", str(other), "--classes", "4", "--per-class", "4", "--size", "32"]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), "--data", str(other), "--out", str(tmp_path / "p"), "--group", "g",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    mine = set(ClassTable.load(run / "classes.json").ids)
    theirs = {p.name.split("_")[0] for p in (other / "train").iterdir()}
    only_run, only_data = sorted(mine - theirs), sorted(theirs - mine)
    assert only_run and only_data  # the generator's IDs depend on the class count
    assert (f"class table of the data in {other} differs from the run's:\n"
            f"{len(only_run)} class(es) only in the run: {', '.join(only_run)}\n"
            f"{len(only_data)} class(es) only in the data in {other}: {', '.join(only_data)}\n") in err


# -- submit and score ---------------------------------------------------------------------------------
def test_submits_resend_hint_keeps_the_token_flag_but_never_the_token(tmp_path, capsys):
    path = tmp_path / "submission.json"
    fgvc.competition.submission.write_submission(path, {"a.jpg": "01"}, "g")
    secret = "fgvc_" + "s3cr3t" * 6
    url = "http://127.0.0.1:9/api/submissions"  # the discard port: nothing listens, the connection is refused
    assert main(["submit", str(path), "--url", url, "--retries", "0", "--token", secret]) == 2
    err = capsys.readouterr().err
    assert err.rstrip().endswith(f"send it again with `fgvc submit {path} --url {url} --token TOKEN` once the "
                                 "problem is fixed.")
    assert secret not in err


def test_score_refuses_labels_of_classes_the_run_does_not_know(tmp_path, capsys):
    submission, labels, classes = tmp_path / "submission.json", tmp_path / "labels.csv", tmp_path / "classes.json"
    fgvc.competition.submission.write_submission(submission, {"a.jpg": "01", "b.jpg": "02", "c.jpg": "01"}, "g")
    labels.write_text("file,class_id\na.jpg,01\nb.jpg,92\nc.jpg,91\n", encoding="utf-8")
    ClassTable(("01", "02"), ("one", "two")).save(classes)
    assert main(["score", str(submission), "--labels", str(labels), "--classes", str(classes)]) == 2
    assert _error(capsys) == ("the --labels file uses 2 class ID(s) missing from --classes: 91, 92; pass the "
                              "classes.json of a run trained on this dataset")


def test_score_takes_a_file_without_groupname_as_the_server_does(tmp_path, capsys):
    submission, labels = tmp_path / "submission.json", tmp_path / "labels.csv"
    submission.write_text('{"images": {"a.jpg": "01", "b.jpg": "01"}}', encoding="utf-8")
    labels.write_text("file,class_id\na.jpg,01\nb.jpg,02\n", encoding="utf-8")
    assert main(["score", str(submission), "--labels", str(labels), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 0.5


# -- labels CSV ---------------------------------------------------------------------------------------
def test_every_bad_labels_row_is_reported_at_once_the_first_ten_by_line(tmp_path):
    path = tmp_path / "labels.csv"
    rows = ["file,class_id", "a.jpg,01", "a.jpg,01"] + [f"f{i}.jpg," for i in range(11)] + ["b.jpg,02"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(LabelsFileError) as e:
        read_labels_csv(path)
    listed = [f"line {4 + i}: need a file name and a class ID, got ['f{i}.jpg', '']" for i in range(9)]
    assert str(e.value) == (
        f"{path}: 12 bad rows:\n  line 3: file 'a.jpg' is already labelled on line 2; each test file needs exactly "
        "one label\n  " + "\n  ".join(listed) + "\n  ... and 2 more")
