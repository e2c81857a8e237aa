"""The package layers of docs/architecture.md hold: no package imports one above it, and no modules import each
other in a circle. The contracts are in pyproject.toml (``[tool.importlinter]``); import-linter checks them on the
import graph of src/fgvc, imports inside functions included."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def _copy_of_fgvc(tmp_path: Path) -> Path:
    copy = tmp_path / "fgvc"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_an_upward_import_breaks_the_layers(tmp_path):
    copy = _copy_of_fgvc(tmp_path)
    run = copy / "engine" / "run.py"
    run.write_text(run.read_text(encoding="utf-8") + "\n\ndef _picture():\n    from ..viz import draw  # noqa: F401\n",
                   encoding="utf-8")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "layers: a package imports only the packages below it BROKEN" in result.stdout, result.stdout
    assert "fgvc.engine.run -> fgvc.viz.draw" in result.stdout, result.stdout


def test_a_circle_inside_a_package_breaks_the_acyclic_contract(tmp_path):
    copy = _copy_of_fgvc(tmp_path)
    # engine.evaluate is imported by engine.trainer; the reverse import closes a circle between the two siblings
    evaluate = copy / "engine" / "evaluate.py"
    evaluate.write_text(evaluate.read_text(encoding="utf-8") + "\n\ndef _fit():\n    from . import trainer  # noqa\n",
                        encoding="utf-8")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no import cycles between the modules of any package BROKEN" in result.stdout, result.stdout


def test_every_top_level_module_has_a_layer(tmp_path):
    copy = _copy_of_fgvc(tmp_path)
    (copy / "newthing.py").write_text('"""A module nobody placed."""\n', encoding="utf-8")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "The following modules are not listed as layers:\n\n- fgvc.newthing\n" in result.stdout, result.stdout
