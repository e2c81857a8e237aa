"""The package layers of docs/architecture.md hold: no package imports one above it, and no modules import each
other in a circle. The contracts are in pyproject.toml (``[tool.importlinter]``); import-linter checks them on the
import graph of src/fgvc, imports inside functions included."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fgvc

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(fgvc.__file__).parent


def _lint_imports(python_path: Path | None = None) -> subprocess.CompletedProcess:
    """import-linter on fgvc (the installed one, or the copy under ``python_path``), with our contracts."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True, no_logo=True))")
    env = dict(os.environ)
    if python_path is not None:
        env["PYTHONPATH"] = str(python_path)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)


def test_the_layers_hold_and_no_package_imports_in_a_circle():
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout, result.stdout


# (file under src/fgvc, code appended to it, what import-linter then says)
BREAKS = {
    "an upward import": ("engine/run.py", "\n\ndef _picture():\n    from ..viz import draw  # noqa: F401\n",
                         "layers: a package imports only the packages below it BROKEN"),
    # engine.trainer imports engine.evaluate; the reverse import closes a circle between two siblings
    "a circle inside a package": ("engine/evaluate.py", "\n\ndef _fit():\n    from . import trainer  # noqa\n",
                                  "no import cycles between the modules of any package BROKEN"),
    "a top-level module without a layer": ("newthing.py", '"""A module nobody placed."""\n',
                                           "The following modules are not listed as layers:\n\n- fgvc.newthing\n"),
}


@pytest.mark.parametrize("case", list(BREAKS))
def test_a_copy_of_fgvc_with_one_break_fails_the_check(case, tmp_path):
    name, code, expected = BREAKS[case]
    copy = tmp_path / "fgvc"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / name
    target.write_text((target.read_text(encoding="utf-8") if target.exists() else "") + code, encoding="utf-8")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stdout, result.stdout
    if case == "an upward import":
        assert "fgvc.engine.run -> fgvc.viz.draw" in result.stdout, result.stdout
