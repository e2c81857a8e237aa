"""Error messages as a user meets them: one line `fgvc: error: ...`, exit 2, in terms of commands and flags."""

import ast
import re
from pathlib import Path

import pytest

import fgvc.competition.client
import fgvc.competition.submission
from fgvc.cli import main
from tests.data.fixtures import competition_tree, exif_rotated_jpeg
from tests.tiny import tiny_synth_args, tiny_train_args


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fgvc: error: "), err
    assert "Traceback" not in err and "internal error" not in err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run and its data (3 classes, 4 images each, 64 px, one epoch on the CPU)."""
    tmp = tmp_path_factory.mktemp("trained")
    root, run = tmp / "data", tmp / "run"
    assert main(tiny_synth_args(root)) == 0
    assert main(tiny_train_args(root, run, sets={"train.epochs": 1})) == 0
    return root, run


# -- submit / score -----------------------------------------------------------------------------------
def test_submit_of_a_missing_file_names_the_command_that_writes_it(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert main(["submit", str(missing), "--url", "http://127.0.0.1:9"]) == 2
    line = _one_error_line(capsys)
    assert line == (f"fgvc: error: submission {missing} does not exist; `fgvc predict RUN --data ROOT --out DIR "
                    "--group NAME` writes DIR/submission.json")


def test_score_of_a_missing_file_names_the_command_that_writes_it(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class_id\na.jpg,01\n", encoding="utf-8")
    assert main(["score", str(tmp_path / "nope.json"), "--labels", str(labels)]) == 2
    assert "does not exist; `fgvc predict RUN --data ROOT --out DIR --group NAME`" in _one_error_line(capsys)


def test_submit_with_a_url_that_is_not_http_names_the_flag(tmp_path, capsys):
    path = tmp_path / "submission.json"
    fgvc.competition.submission.write_submission(path, {"a.jpg": "01"}, "g")
    assert main(["submit", str(path), "--url", "127.0.0.1:8000/submit"]) == 2
    line = _one_error_line(capsys)
    assert "--url must be the scoring server's address, starting with http:// or https://" in line


def test_score_with_an_id_unknown_to_the_labels_points_at_the_classes_flag(tmp_path, capsys):
    path, labels = tmp_path / "submission.json", tmp_path / "labels.csv"
    fgvc.competition.submission.write_submission(path, {"a.jpg": "01", "b.jpg": "03"}, "g")
    labels.write_text("file,class_id\na.jpg,01\nb.jpg,02\n", encoding="utf-8")
    assert main(["score", str(path), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err  # a multi-line list of problems, then the hint
    assert err.startswith("fgvc: error: submission does not match the test set:")
    assert "add --classes RUN/classes.json to know every training class" in err
    assert "class_ids" not in err


def _raised_messages(module) -> list[tuple[int, str]]:
    """The literal text of every ``raise X(...)`` in a module, f-string holes left out."""
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            parts = [n.value for n in ast.walk(node.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            found.append((node.lineno, "".join(parts)))
    return found


def test_submission_messages_speak_of_commands_and_flags_not_python():
    python_words = re.compile(r"(?<![-\w])(\w+=|write_\w+|load_\w+|score_\w+|submit_\w+|validate_\w+|"
                              r"call |dict\b|list\b|NoneType)")
    modules = (fgvc.competition.submission, fgvc.competition.client)
    offending = [(module.__name__, line, text) for module in modules for line, text in _raised_messages(module)
                 if python_words.search(text)]
    assert offending == []


# -- predict ------------------------------------------------------------------------------------------
def test_predict_into_a_file_says_out_must_be_a_folder(trained, tmp_path, capsys):
    root, run = trained
    in_the_way = tmp_path / "sub.json"
    in_the_way.write_text("not a folder")
    capsys.readouterr()
    assert main(["predict", str(run), "--data", str(root), "--out", str(in_the_way), "--group", "g",
                 "--device", "cpu", "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"fgvc: error: --out {in_the_way} must be a folder, but a file is in the way there")
    assert "Errno" not in line
    assert in_the_way.read_text() == "not a folder"  # left alone


def test_predict_below_a_file_names_the_out_folder(trained, tmp_path, capsys):
    root, run = trained
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "preds"
    capsys.readouterr()
    assert main(["predict", str(run), "--data", str(root), "--out", str(out), "--group", "g",
                 "--device", "cpu", "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"fgvc: error: cannot create the --out folder {out}: a file is in the way")


def test_predict_into_a_new_folder_writes_the_submission(trained, tmp_path, capsys):
    root, run = trained
    out = tmp_path / "new" / "preds"
    assert main(["predict", str(run), "--data", str(root), "--out", str(out), "--group", "g",
                 "--device", "cpu", "--no-progress"]) == 0
    assert f"wrote {out / 'submission.json'}" in capsys.readouterr().out
    assert fgvc.competition.submission.load_submission(out / "submission.json")["groupname"] == "g"


# -- data check ---------------------------------------------------------------------------------------
def test_data_check_reports_exif_rotated_images_and_unreadable_counts(tmp_path, capsys):
    root = competition_tree(tmp_path / "data", {"04615_A": 2, "04620_B": 2}, test=1, size=(40, 40))
    rotated = exif_rotated_jpeg(root / "train" / "04615_A" / "rotated.jpg")
    (root / "train" / "04620_B" / "empty.jpg").write_bytes(b"")
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "images:   train 6 (1 unreadable), test 1\n" in out
    assert "per class (train, readable): min 2, median 2.5, max 3\n" in out
    assert f"  1 rotated (or flipped) as their EXIF orientation tag says: {rotated}\n" in out
