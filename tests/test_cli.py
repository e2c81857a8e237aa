"""The CLI as a user runs it: exit codes, printed reports, one-line errors."""

import json
import subprocess
import sys

from fgvc.cli import main
from tests.tiny import tiny_synth_args, tiny_train_args


def test_synth_then_check_reports_ten_classes(tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["data", "synth", str(root), "--classes", "10", "--per-class", "3", "--size", "64"]) == 0
    assert "wrote 10 classes" in capsys.readouterr().out
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "format:   competition" in out and "classes:  10" in out and "result:   usable" in out
    assert "boxes:    30 of 30 images" in out
    assert main(["data", "check", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_classes"] == 10 and report["usable"] is True and report["images_with_boxes"] == 30


def test_check_exits_1_on_errors(tmp_path, capsys):
    root = tmp_path / "data"
    main(["data", "synth", str(root), "--classes", "2", "--per-class", "2", "--size", "64"])
    capsys.readouterr()
    victim = next((root / "train").rglob("*.jpg"))
    victim.write_bytes(b"")
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert str(victim) in out and "NOT usable" in out


def test_missing_folder_is_one_line_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fgvc", "data", "check", str(tmp_path / "nope")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("fgvc: error:") and "data folder not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_synth_into_a_non_empty_folder_is_refused(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["data", "synth", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_train_writes_the_report_and_explain_and_report_commands(tmp_path, capsys):
    root, run = tmp_path / "data", tmp_path / "run"
    assert main(tiny_synth_args(root)) == 0
    assert main(tiny_train_args(root, run, report=True, sets={"train.epochs": 1})) == 0
    assert f"report written to {run / 'report.html'}" in capsys.readouterr().out
    assert (run / "eval_val" / "metrics.json").is_file()
    image = sorted((root / "test").glob("*.jpg"))[0]
    assert main(["explain", str(run), str(image), "--out", str(tmp_path / "pics"), "--device", "cpu"]) == 0
    assert (tmp_path / "pics" / f"{image.stem}.png").is_file()
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), "--device", "cpu", "--no-progress"]) == 0
    assert (tmp_path / "r.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    capsys.readouterr()
    assert main(["explain", str(run), str(tmp_path / "nope.jpg")]) == 2
    assert "no such image file or folder" in capsys.readouterr().err


def test_colliding_ids_are_a_report_with_exit_1(tmp_path, capsys):
    from tests.data.fixtures import competition_tree

    root = competition_tree(tmp_path / "data", {"04615_a": 1, "4615_b": 1})
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "04615_a" in out and "4615_b" in out and "NOT usable" in out
