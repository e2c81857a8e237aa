"""An exported file is what its content says, whatever `--out` named it; a file that is neither a checkpoint nor
an export is told apart from a damaged checkpoint, by every command that reads one."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from fgvc.cli import main
from fgvc.export import exported_format
from tests.seeing_fixtures import build_data
from tests.serve.exports import export

pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'fgvc[export]'")

NOT_A_MODEL = ("is neither an fgvc checkpoint nor a file written by `fgvc export`; pass a run folder, one of its "
               "checkpoints (best.pt, last.pt, epoch_*.pt) or an exported ONNX, TorchScript or ExportedProgram file")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp()  # the exports and runs the export and serve tests share


def _predicted(source: Path, data: Path, out: Path) -> list[tuple[str, str]]:
    assert main(["predict", str(source), "--data", str(data), "--out", str(out), "--device", "cpu",
                 "--no-progress"]) == 0
    return [(row["file"], row["class_id"]) for row in csv.DictReader((out / "predictions.csv").open())]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_export_under_any_name_is_recognised_by_its_content(base, tmp_path, fmt):
    done = export(base, "baseline", fmt)
    assert done.code == 0, done.err
    renamed = tmp_path / "model.txt"
    shutil.copy(done.path, renamed)
    assert exported_format(renamed) == fmt
    data = build_data(base)
    assert _predicted(renamed, data, tmp_path / "a") == _predicted(done.path, data, tmp_path / "b")


def test_export_to_a_name_without_the_suffix_then_predict(base, tmp_path, capsys):
    run = export(base, "baseline", "onnx").run
    assert main(["export", str(run), "--out", str(tmp_path / "model.txt")]) == 0
    assert exported_format(tmp_path / "model.txt") == "onnx"
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "model.txt"), "--data", str(build_data(base)), "--out",
                 str(tmp_path / "p"), "--device", "cpu", "--no-progress"]) == 0
    # the seeing data: 4 classes x round(6 x 0.25) test images
    assert capsys.readouterr().out.startswith(f"predicted 8 images with {tmp_path / 'model.txt'} (")


@pytest.mark.parametrize("content", [b"file,class_id\nimg1.jpg,04615\n", b"\xff\xd8\xff\xe0 a JPEG", b"{}"])
def test_predict_and_serve_of_a_file_that_is_no_model_say_what_they_accept(base, tmp_path, capsys, content):
    some = tmp_path / "some.csv"
    some.write_bytes(content)
    assert exported_format(some) is None
    for argv in (["predict", str(some), "--data", str(build_data(base)), "--out", str(tmp_path / "p")],
                 ["serve", str(some), "--port", "1"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err == f"fgvc: error: {some} {NOT_A_MODEL}\n", argv


def test_a_checkpoint_cut_short_is_still_called_damaged(base, tmp_path, capsys):
    run = export(base, "baseline", "onnx").run
    cut = tmp_path / "best.pt"
    cut.write_bytes((run / "best.pt").read_bytes()[:1000])
    assert main(["predict", str(cut), "--data", str(build_data(base)), "--out", str(tmp_path / "p")]) == 2
    assert "The file is damaged or not a checkpoint" in capsys.readouterr().err
