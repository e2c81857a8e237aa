"""The CLI as a user runs it: exit codes, printed reports, one-line errors."""

import json
import subprocess
import sys

from fgvc.cli import main


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
