"""The command line's choice lists are the library's constants (read when needed), not copies of them."""

import subprocess
import sys

import pytest

import fgvc.engine.ensemble as ensemble
import fgvc.export.formats as formats
from fgvc.cli import build_parser


def test_tta_accepts_what_the_library_accepts(monkeypatch):
    monkeypatch.setattr(ensemble, "TTA_SCHEMES", (*ensemble.TTA_SCHEMES, "flip+more"))
    assert build_parser().parse_args(["evaluate", "run", "--data", "d", "--tta", "flip+more"]).tta == "flip+more"


def test_export_formats_are_the_library_formats(monkeypatch, capsys):
    monkeypatch.setattr(formats, "FORMATS", ("onnx",))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "run", "--format", "torchscript"])
    assert "argument --format: invalid choice: 'torchscript' (choose from 'onnx')" in capsys.readouterr().err


def test_building_the_parser_imports_no_torch():
    code = "import sys, fgvc.cli; fgvc.cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
